import { useState } from "react";
import { api, q } from "../../api/client";
import type { Quota as QuotaT } from "../../api/types";
import { ErrorBox, Loading } from "../../components/ui";
import { useResource } from "../../hooks";
import { useSession } from "../../session";

const LABELS: Record<string, string> = {
  instances: "Instances", vcpus: "vCPUs", memory_mb: "Memory (MiB)", disk_gb: "Disk (GB)",
  networks: "Networks", ips: "Addresses", pool_checkouts: "Pool checkouts",
};

export function Quota() {
  const { me } = useSession();
  const path = `/workspaces/${q(me?.workspace_id ?? "")}/quota`;
  const quota = useResource<QuotaT>(path, ["instance.", "network.", "pool."]);
  const [draft, setDraft] = useState<Record<string, string> | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  if (!quota.data) return quota.error ? <ErrorBox error={quota.error} /> : <Loading />;
  const { limits, usage } = quota.data;
  const keys = Object.keys(LABELS).filter((k) => k in limits || k in usage);
  const editing = draft !== null;
  return (
    <form aria-label="Quota" onSubmit={async (e) => {
      e.preventDefault();
      if (!draft) return;
      setError(null);
      try {
        const body: Record<string, number | null> = {};
        for (const k of keys) body[k] = draft[k].trim() === "" ? null : Number(draft[k]);
        await api.put(path, body);
        setDraft(null);
        setSaved(true);
        await quota.reload();
      } catch (err) {
        setError(err);
      }
    }}>
      <div className="table-wrap">
        <table aria-label="Usage and limits">
          <thead><tr><th>Resource</th><th>Used</th><th>Limit</th><th className="hide-narrow" style={{ width: "40%" }} /></tr></thead>
          <tbody>
            {keys.map((k) => {
              const limit = limits[k];
              const used = usage[k] ?? 0;
              const pct = limit ? Math.min(100, (100 * used) / limit) : 0;
              return (
                <tr key={k} data-quota={k}>
                  <td>{LABELS[k]}</td>
                  <td>{used}</td>
                  <td>
                    {editing ? (
                      <input aria-label={`${LABELS[k]} limit`} type="number" min={0} value={draft[k]} placeholder="unlimited" style={{ maxWidth: "8rem" }} onChange={(e) => setDraft({ ...draft, [k]: e.target.value })} />
                    ) : <span data-testid={`limit-${k}`}>{limit ?? "unlimited"}</span>}
                  </td>
                  <td className="hide-narrow">{limit != null && <div className={`progress ${pct >= 90 ? "full" : ""}`}><div style={{ width: `${pct}%` }} /></div>}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      <ErrorBox error={error} />
      {saved && !editing && <p className="muted" role="status">Limits saved.</p>}
      {me?.is_admin ? (
        <div className="form-actions">
          {editing ? (
            <>
              <button type="button" onClick={() => setDraft(null)}>Cancel</button>
              <button type="submit" className="primary">Save limits</button>
            </>
          ) : (
            <button type="button" onClick={() => {
              setSaved(false);
              setDraft(Object.fromEntries(keys.map((k) => [k, limits[k]?.toString() ?? ""])));
            }}>Edit limits</button>
          )}
        </div>
      ) : <p className="muted small">Only system administrators change limits.</p>}
    </form>
  );
}
