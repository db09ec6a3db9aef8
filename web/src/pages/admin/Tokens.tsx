import { useState } from "react";
import { api, q } from "../../api/client";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal } from "../../components/ui";
import { ago } from "../../format";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import type { Role, Token, TokenCreated } from "./types";

export function Tokens() {
  const { me } = useSession();
  const list = useResource<Token[]>("/tokens");
  const roles = useResource<Role[]>(`/workspaces/${q(me?.workspace_id ?? "")}/roles`);
  const [open, setOpen] = useState(false);
  const [created, setCreated] = useState<TokenCreated | null>(null);
  const [name, setName] = useState("");
  const [role, setRole] = useState("viewer");
  const [days, setDays] = useState("90");
  const [error, setError] = useState<unknown>(null);
  const [copied, setCopied] = useState(false);
  const wsName = (id: string | null) => me?.workspaces.find((w) => w.workspace_id === id)?.workspace ?? id ?? "–";
  const close = () => {
    setOpen(false);
    setCreated(null);
    setCopied(false);
  };
  return (
    <>
      <div className="toolbar">
        <button type="button" className="primary" onClick={() => setOpen(true)}>New token</button>
        <span className="muted small">Tokens act for you in one workspace with one role, for scripts and the CLI.</span>
      </div>
      <ErrorBox error={list.error} />
      {!list.data ? <Loading /> : list.data.length === 0 ? <Empty>No API tokens.</Empty> : (
        <div className="table-wrap">
          <table aria-label="API tokens">
            <thead><tr><th>Name</th><th>Prefix</th><th>Workspace</th><th>Role</th><th className="hide-narrow">Created</th><th className="hide-narrow">Expires</th><th className="hide-narrow">Last used</th><th>Status</th><th /></tr></thead>
            <tbody>
              {list.data.map((t) => {
                const expired = t.expires_at && new Date(t.expires_at).getTime() < Date.now();
                return (
                  <tr key={t.id} data-token={t.name}>
                    <td>{t.name}</td>
                    <td className="mono">{t.prefix}…</td>
                    <td>{wsName(t.workspace_id)}</td>
                    <td>{t.role}</td>
                    <td className="hide-narrow">{ago(t.created_at)}</td>
                    <td className="hide-narrow">{t.expires_at ? new Date(t.expires_at).toLocaleDateString() : "never"}</td>
                    <td className="hide-narrow">{t.last_used_at ? ago(t.last_used_at) : "never"}</td>
                    <td><span className={`badge ${t.revoked_at || expired ? "bad" : "ok"}`}>{t.revoked_at ? "revoked" : expired ? "expired" : "active"}</span></td>
                    <td>{!t.revoked_at && (
                      <ActionButton className="danger" confirm={`Revoke token ${t.name}? It stops working at once.`} onClick={async () => {
                        await api.del(`/tokens/${q(t.id)}`);
                        await list.reload();
                      }}>Revoke</ActionButton>
                    )}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <Modal title="New API token" open={open} onClose={close}>
        {created ? (
          <div>
            <p><strong>Copy the secret now:</strong> it is shown this once only.</p>
            <div className="secret">
              <code data-testid="token-secret">{created.token}</code>
              <button type="button" onClick={async () => {
                await navigator.clipboard?.writeText(created.token).catch(() => undefined);
                setCopied(true);
              }}>{copied ? "Copied" : "Copy"}</button>
            </div>
            <p className="muted small">Use it as <code>Authorization: Bearer …</code> or <code>CLOUDLET_TOKEN</code>.</p>
            <div className="form-actions"><button type="button" className="primary" onClick={close}>Done</button></div>
          </div>
        ) : (
          <form aria-label="New token" onSubmit={async (e) => {
            e.preventDefault();
            setError(null);
            try {
              setCreated(await api.post<TokenCreated>("/tokens", { name: name.trim(), role, expires_in_days: days ? Number(days) : null }));
              setName("");
              await list.reload();
            } catch (err) {
              setError(err);
            }
          }}>
            <Field label="Name"><input name="name" required maxLength={64} value={name} onChange={(e) => setName(e.target.value)} autoFocus /></Field>
            <Field label="Role" hint="At most your own rights in this workspace.">
              <select name="role" value={role} onChange={(e) => setRole(e.target.value)}>
                {(roles.data ?? [{ id: "viewer", name: "viewer" }]).map((r) => <option key={r.id}>{r.name}</option>)}
              </select>
            </Field>
            <Field label="Expires after (days)" hint="Empty: never."><input name="expires" type="number" min={1} max={3650} value={days} onChange={(e) => setDays(e.target.value)} /></Field>
            <ErrorBox error={error} />
            <div className="form-actions"><button type="submit" className="primary">Create token</button></div>
          </form>
        )}
      </Modal>
    </>
  );
}
