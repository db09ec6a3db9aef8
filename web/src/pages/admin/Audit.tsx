import { useState } from "react";
import { API, q } from "../../api/client";
import { Empty, ErrorBox, Loading } from "../../components/ui";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import type { AuditEntry } from "./types";

const PAGE = 50;

export function Audit() {
  const { me } = useSession();
  const [action, setAction] = useState("");
  const [user, setUser] = useState("");
  const [since, setSince] = useState("");
  const [offset, setOffset] = useState(0);
  const ws = me?.workspace_id ?? "";
  const params = new URLSearchParams({ workspace: ws, limit: String(PAGE), offset: String(offset) });
  if (action.trim()) params.set("action", action.trim());
  if (user.trim()) params.set("user", user.trim());
  if (since) params.set("since", new Date(since).toISOString());
  const list = useResource<AuditEntry[]>(`/audit?${params.toString()}`);
  const exportUrl = `${API}/audit/export?workspace=${q(ws)}${since ? `&since=${q(new Date(since).toISOString())}` : ""}`;
  const rows = list.data ?? [];
  return (
    <>
      <form className="toolbar" aria-label="Audit filters" onSubmit={(e) => e.preventDefault()}>
        <input type="search" aria-label="Action contains" placeholder="action contains…" value={action} onChange={(e) => { setAction(e.target.value); setOffset(0); }} style={{ maxWidth: "14rem" }} />
        <input aria-label="User id" placeholder="user id" value={user} onChange={(e) => { setUser(e.target.value); setOffset(0); }} style={{ maxWidth: "14rem" }} />
        <label className="inline">Since <input type="datetime-local" aria-label="Since" value={since} onChange={(e) => { setSince(e.target.value); setOffset(0); }} style={{ width: "auto" }} /></label>
        <a className="button" href={exportUrl} download="audit.ndjson">Export (JSON lines)</a>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? <Loading /> : rows.length === 0 ? <Empty>No entries.</Empty> : (
        <div className="table-wrap">
          <table aria-label="Audit log">
            <thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th><th className="hide-narrow">Request</th><th>Result</th><th className="hide-narrow">Source</th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-audit={r.action}>
                  <td title={r.at}>{new Date(r.at).toLocaleString()}</td>
                  <td>{r.principal}</td>
                  <td className="mono">{r.action}</td>
                  <td className="mono">{r.target ?? "–"}</td>
                  <td className="mono hide-narrow small">{r.method} {r.path}</td>
                  <td><span className={`badge ${r.status < 400 ? "ok" : "bad"}`}>{r.status} {r.result}</span></td>
                  <td className="hide-narrow">{r.source ?? "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="toolbar pager">
        <button type="button" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Newer</button>
        <span className="muted">{rows.length ? `${offset + 1}–${offset + rows.length}` : ""}</span>
        <button type="button" disabled={rows.length < PAGE} onClick={() => setOffset(offset + PAGE)}>Older</button>
      </div>
    </>
  );
}
