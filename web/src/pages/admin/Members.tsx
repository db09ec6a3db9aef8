import { useState } from "react";
import { api, q } from "../../api/client";
import { ActionButton, ErrorBox, Field, Loading, Modal } from "../../components/ui";
import { ago } from "../../format";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import { RESOURCES, VERBS, type Member, type Role } from "./types";

export function Members() {
  const { me, can } = useSession();
  const ws = q(me?.workspace_id ?? "");
  const members = useResource<Member[]>(`/workspaces/${ws}/members`);
  const roles = useResource<Role[]>(`/workspaces/${ws}/roles`);
  const [username, setUsername] = useState("");
  const [role, setRole] = useState("viewer");
  const [addError, setAddError] = useState<unknown>(null);
  const [roleOpen, setRoleOpen] = useState(false);
  const names = (roles.data ?? []).map((r) => r.name);
  return (
    <>
      <h2>Members of {me?.workspaces.find((w) => w.workspace_id === me.workspace_id)?.workspace}</h2>
      {can("member:create") && (
        <form className="toolbar" aria-label="Add member" onSubmit={async (e) => {
          e.preventDefault();
          setAddError(null);
          try {
            await api.post(`/workspaces/${ws}/members`, { username: username.trim(), role });
            setUsername("");
            await members.reload();
          } catch (err) {
            setAddError(err);
          }
        }}>
          <input aria-label="Username" placeholder="username" required value={username} onChange={(e) => setUsername(e.target.value)} style={{ maxWidth: "14rem" }} />
          <select aria-label="Role" value={role} onChange={(e) => setRole(e.target.value)} style={{ width: "auto" }}>
            {names.map((n) => <option key={n}>{n}</option>)}
          </select>
          <button type="submit" className="primary">Add member</button>
        </form>
      )}
      <ErrorBox error={addError ?? members.error} />
      {!members.data ? <Loading /> : (
        <div className="table-wrap">
          <table aria-label="Members">
            <thead><tr><th>User</th><th>Role</th><th className="hide-narrow">Since</th><th>Actions</th></tr></thead>
            <tbody>
              {members.data.map((m) => (
                <tr key={m.user_id} data-member={m.username}>
                  <td>{m.username}</td>
                  <td>
                    {can("member:edit") ? (
                      <select aria-label={`Role of ${m.username}`} value={m.role} style={{ width: "auto" }} onChange={async (e) => {
                        try {
                          await api.patch(`/workspaces/${ws}/members/${q(m.username)}`, { role: e.target.value });
                          setAddError(null);
                        } catch (err) {
                          setAddError(err);
                        }
                        await members.reload();
                      }}>
                        {(names.includes(m.role) ? names : [m.role, ...names]).map((n) => <option key={n}>{n}</option>)}
                      </select>
                    ) : m.role}
                  </td>
                  <td className="hide-narrow">{ago(m.since)}</td>
                  <td>{can("member:delete") && (
                    <ActionButton className="danger" confirm={`Remove ${m.username} from this workspace?`} onClick={async () => {
                      await api.del(`/workspaces/${ws}/members/${q(m.username)}`);
                      await members.reload();
                    }}>Remove</ActionButton>
                  )}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h2 style={{ marginTop: "1.5rem" }}>Roles</h2>
      {can("member:edit") && <div className="toolbar"><button type="button" onClick={() => setRoleOpen(true)}>New role</button></div>}
      <ErrorBox error={roles.error} />
      <div className="table-wrap">
        <table aria-label="Roles">
          <thead><tr><th>Role</th><th>Permissions</th><th /></tr></thead>
          <tbody>
            {(roles.data ?? []).map((r) => (
              <tr key={r.id}>
                <td>{r.name} {r.builtin && <span className="muted small">built-in</span>}</td>
                <td className="wrap small">{r.permissions.join(", ")}</td>
                <td>{!r.builtin && can("member:edit") && (
                  <ActionButton className="danger" confirm={`Delete role ${r.name}?`} onClick={async () => {
                    await api.del(`/workspaces/${ws}/roles/${q(r.name)}`);
                    await roles.reload();
                  }}>Delete</ActionButton>
                )}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <Modal title="New role" open={roleOpen} onClose={() => setRoleOpen(false)} wide>
        <RoleForm ws={ws} onDone={() => { setRoleOpen(false); void roles.reload(); }} />
      </Modal>
    </>
  );
}

function RoleForm({ ws, onDone }: { ws: string; onDone: () => void }) {
  const [name, setName] = useState("");
  const [perms, setPerms] = useState<Set<string>>(new Set());
  const [error, setError] = useState<unknown>(null);
  const toggle = (p: string) => setPerms((old) => {
    const next = new Set(old);
    if (next.has(p)) next.delete(p);
    else next.add(p);
    return next;
  });
  return (
    <form aria-label="New role" onSubmit={async (e) => {
      e.preventDefault();
      try {
        await api.post(`/workspaces/${ws}/roles`, { name: name.trim(), permissions: [...perms] });
        onDone();
      } catch (err) {
        setError(err);
      }
    }}>
      <Field label="Name"><input name="name" required value={name} onChange={(e) => setName(e.target.value)} autoFocus /></Field>
      <div className="table-wrap">
        <table aria-label="Permissions">
          <thead><tr><th>Resource</th>{VERBS.map((v) => <th key={v}>{v}</th>)}</tr></thead>
          <tbody>
            {RESOURCES.map((r) => (
              <tr key={r}>
                <td>{r}</td>
                {VERBS.map((v) => (
                  <td key={v}><input type="checkbox" aria-label={`${r}:${v}`} checked={perms.has(`${r}:${v}`)} onChange={() => toggle(`${r}:${v}`)} /></td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <label className="choice"><input type="checkbox" checked={perms.has("audit:view")} onChange={() => toggle("audit:view")} /> audit:view</label>
      <ErrorBox error={error} />
      <div className="form-actions"><button type="submit" className="primary">Create role</button></div>
    </form>
  );
}
