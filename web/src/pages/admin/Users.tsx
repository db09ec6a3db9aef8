import { useState } from "react";
import { api, q } from "../../api/client";
import { ActionButton, ErrorBox, Field, Loading, Modal } from "../../components/ui";
import { ago } from "../../format";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import type { User } from "./types";

export function Users() {
  const { me } = useSession();
  const list = useResource<User[]>("/users");
  const [open, setOpen] = useState(false);
  const [f, setF] = useState({ username: "", display: "", password: "", admin: false });
  const [error, setError] = useState<unknown>(null);
  const patch = async (u: User, body: Partial<User>) => {
    await api.patch(`/users/${q(u.id)}`, body);
    await list.reload();
  };
  return (
    <>
      <div className="toolbar"><button type="button" className="primary" onClick={() => setOpen(true)}>New user</button></div>
      <ErrorBox error={list.error} />
      {!list.data ? <Loading /> : (
        <div className="table-wrap">
          <table aria-label="Users">
            <thead><tr><th>Username</th><th className="hide-narrow">Name</th><th>Admin</th><th>Status</th><th className="hide-narrow">Created</th><th>Actions</th></tr></thead>
            <tbody>
              {list.data.map((u) => (
                <tr key={u.id} data-user={u.username}>
                  <td>{u.username}</td>
                  <td className="hide-narrow">{u.display_name ?? "–"}</td>
                  <td>{u.is_admin ? "yes" : "no"}</td>
                  <td><span className={`badge ${u.disabled ? "bad" : "ok"}`}>{u.disabled ? "disabled" : "active"}</span></td>
                  <td className="hide-narrow">{ago(u.created_at)}</td>
                  <td>
                    {u.id !== me?.id && (
                      <div className="row-actions">
                        <ActionButton confirm={u.disabled ? undefined : `Disable ${u.username}? Their sessions and tokens stop working at once.`} onClick={() => patch(u, { disabled: !u.disabled })}>{u.disabled ? "Enable" : "Disable"}</ActionButton>
                        <ActionButton onClick={() => patch(u, { is_admin: !u.is_admin })}>{u.is_admin ? "Remove admin" : "Make admin"}</ActionButton>
                      </div>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Modal title="New user" open={open} onClose={() => setOpen(false)}>
        <form aria-label="New user" onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            await api.post("/users", { username: f.username.trim(), display_name: f.display.trim() || null, password: f.password || null, is_admin: f.admin });
            setOpen(false);
            setF({ username: "", display: "", password: "", admin: false });
            await list.reload();
          } catch (err) {
            setError(err);
          }
        }}>
          <Field label="Username"><input name="username" required value={f.username} onChange={(e) => setF({ ...f, username: e.target.value })} autoFocus /></Field>
          <Field label="Display name"><input name="display_name" value={f.display} onChange={(e) => setF({ ...f, display: e.target.value })} /></Field>
          <Field label="Password" hint="Leave empty for single sign-on (OIDC) only."><input name="password" type="password" autoComplete="new-password" value={f.password} onChange={(e) => setF({ ...f, password: e.target.value })} /></Field>
          <label className="choice"><input type="checkbox" checked={f.admin} onChange={(e) => setF({ ...f, admin: e.target.checked })} /> System administrator</label>
          <ErrorBox error={error} />
          <div className="form-actions"><button type="submit" className="primary">Create user</button></div>
        </form>
      </Modal>
    </>
  );
}
