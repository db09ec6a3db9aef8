import { useState } from "react";
import { api, q } from "../../api/client";
import type { Workspace } from "../../api/types";
import { ActionButton, ErrorBox, Loading } from "../../components/ui";
import { ago } from "../../format";
import { useResource } from "../../hooks";
import { useSession } from "../../session";

export function Workspaces() {
  const { me, refresh, switchWorkspace } = useSession();
  const list = useResource<Workspace[]>("/workspaces");
  const [name, setName] = useState("");
  const [error, setError] = useState<unknown>(null);
  return (
    <>
      <form className="toolbar" aria-label="New workspace" onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          await api.post("/workspaces", { name: name.trim() });
          setName("");
          await list.reload();
          await refresh();
        } catch (err) {
          setError(err);
        }
      }}>
        <input aria-label="Workspace name" placeholder="team-a" required maxLength={63} value={name} onChange={(e) => setName(e.target.value)} style={{ maxWidth: "16rem" }} />
        <button type="submit" className="primary">Create workspace</button>
      </form>
      <ErrorBox error={error ?? list.error} />
      {!list.data ? <Loading /> : (
        <div className="table-wrap">
          <table aria-label="Workspaces">
            <thead><tr><th>Name</th><th>Your role</th><th className="hide-narrow">Created</th><th>Actions</th></tr></thead>
            <tbody>
              {list.data.map((w) => (
                <tr key={w.id} data-workspace={w.name}>
                  <td>{w.name} {w.id === me?.workspace_id && <span className="badge ok">current</span>}</td>
                  <td>{w.role}</td>
                  <td className="hide-narrow">{ago(w.created_at)}</td>
                  <td>
                    <div className="row-actions">
                      {w.id !== me?.workspace_id && <ActionButton onClick={() => switchWorkspace(w.id)}>Switch</ActionButton>}
                      {w.role === "owner" && w.id !== me?.workspace_id && (
                        <ActionButton className="danger" confirm={`Delete workspace ${w.name}? Only an empty one can go.`} onClick={async () => {
                          await api.del(`/workspaces/${q(w.id)}`);
                          await list.reload();
                          await refresh();
                        }}>Delete</ActionButton>
                      )}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
