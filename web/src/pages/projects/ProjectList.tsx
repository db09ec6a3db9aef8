import { useState, type FormEvent } from "react";
import { Link, useNavigate } from "react-router-dom";
import { api, q } from "../../api/client";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal, PageHeader } from "../../components/ui";
import { ago, bytes } from "../../format";
import { useAction, useResource, useTick } from "../../hooks";
import { useSession } from "../../session";
import { STARTER, type Project } from "./model";

function CreateProject({ onCreated }: { onCreated: (name: string) => void }) {
  const [name, setName] = useState("");
  const [starter, setStarter] = useState(true);
  const { busy, error, run } = useAction();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      await api.post("/projects", { name: name.trim(), dockerfile: starter ? STARTER : "" });
      onCreated(name.trim());
    });
  };
  return (
    <form onSubmit={submit} aria-label="New project">
      <Field label="Project name" hint="Lowercase letters, digits and dashes; the image is tagged <name>:latest by default.">
        <input name="name" required autoFocus autoComplete="off" value={name} onChange={(e) => setName(e.target.value)} />
      </Field>
      <label className="choice"><input type="checkbox" checked={starter} onChange={(e) => setStarter(e.target.checked)} /> Start from an example Dockerfile</label>
      <ErrorBox error={error} />
      <div className="form-actions"><button type="submit" className="primary" disabled={busy || !name.trim()}>Create</button></div>
    </form>
  );
}

export default function ProjectList() {
  const { can } = useSession();
  const navigate = useNavigate();
  const now = useTick(30000);
  const [creating, setCreating] = useState(false);
  const [filter, setFilter] = useState("");
  const list = useResource<Project[]>("/projects", ["operation.updated"]);
  const all = list.data ?? [];
  const shown = all.filter((p) => p.name.includes(filter.trim().toLowerCase()));
  return (
    <>
      <PageHeader title="Dockerfiles">
        {can("image:create") && <button type="button" className="primary" onClick={() => setCreating(true)}>New project</button>}
      </PageHeader>
      <p className="muted">A project is a folder with a Dockerfile and the files it copies in; build it into a container image.</p>
      <div className="toolbar">
        <input type="search" placeholder="Filter by name" aria-label="Filter projects" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <span className="muted">{shown.length} of {all.length}</span>
      </div>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? <Loading /> : shown.length === 0 ? (
        <Empty>{all.length ? "No project matches the filter." : "No projects yet."}</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Projects">
            <thead><tr><th>Name</th><th>Files</th><th className="hide-narrow">Size</th><th className="hide-narrow">Changed</th><th>Actions</th></tr></thead>
            <tbody>
              {shown.map((p) => (
                <tr key={p.name} data-project={p.name}>
                  <td><Link to={`/projects/${q(p.name)}`}>{p.name}</Link></td>
                  <td>{p.file_count}</td>
                  <td className="hide-narrow">{bytes(p.total_bytes)}</td>
                  <td className="hide-narrow">{ago(p.updated_at, now)}</td>
                  <td><div className="row-actions">
                    {can("image:delete") && (
                      <ActionButton className="danger" confirm={`Delete project ${p.name} and all its files? Built images stay.`} onClick={async () => {
                        await api.del(`/projects/${q(p.name)}`);
                        await list.reload();
                      }}>Delete</ActionButton>
                    )}
                  </div></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Modal title="New Dockerfile project" open={creating} onClose={() => setCreating(false)}>
        <CreateProject onCreated={(name) => navigate(`/projects/${q(name)}`)} />
      </Modal>
    </>
  );
}
