// The "Container images" tab: the engine's images this workspace sees (filter, size, tags,
// in use), pull by reference, search the registry, delete, prune dangling ones.
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, q } from "../../api/client";
import { succeeded } from "../../api/operations";
import type { Operation } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Field, Loading } from "../../components/ui";
import { ago, bytes } from "../../format";
import { useAction, useResource, useTick } from "../../hooks";
import { useLive } from "../../live";
import { useSession } from "../../session";
import type { ContainerImage, RegistryImage } from "../containers/model";

function PullForm({ initial, onDone }: { initial: string; onDone: () => void }) {
  const [ref, setRef] = useState(initial);
  const { busy, error, run } = useAction();
  const [log, setLog] = useState("");
  const { notify } = useLive();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setLog("");
    await run(async () => {
      const op = await api.post<Operation>("/container-images/pull?wait=5", { image: ref.trim() });
      await succeeded(op, (now) => setLog(now.message ?? ""));
      notify("ok", `Pulled ${ref.trim()}`);
      onDone();
    });
  };
  return (
    <form className="panel" onSubmit={submit} aria-label="Pull an image">
      <h2>Pull</h2>
      <div className="inline-form">
        <Field label="Image reference"><input name="pull" required value={ref} placeholder="e.g. debian:12" onChange={(e) => setRef(e.target.value)} /></Field>
        <button type="submit" className="primary" disabled={busy || !ref.trim()}>{busy ? "Pulling…" : "Pull"}</button>
      </div>
      {busy && log && <p className="muted small">{log}</p>}
      <div data-testid="pull-error"><ErrorBox error={error} /></div>
    </form>
  );
}

function RegistrySearch({ onPick }: { onPick: (name: string) => void }) {
  const [term, setTerm] = useState("");
  const { busy, error, run } = useAction();
  const [found, setFound] = useState<RegistryImage[] | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setFound(null);
    await run(async () => {
      setFound(await api.get<RegistryImage[]>(`/container-images/search?q=${q(term.trim())}&limit=25`));
    });
  };
  return (
    <form className="panel" onSubmit={submit} aria-label="Search the registry">
      <h2>Search the registry</h2>
      <div className="inline-form">
        <Field label="Search term"><input name="search" type="search" required value={term} placeholder="e.g. nginx" onChange={(e) => setTerm(e.target.value)} /></Field>
        <button type="submit" disabled={busy || !term.trim()}>{busy ? "Searching…" : "Search"}</button>
      </div>
      <div data-testid="search-error"><ErrorBox error={error} /></div>
      {found && !found.length && <Empty>Nothing found.</Empty>}
      {!!found?.length && (
        <ul className="plain" aria-label="Registry results">
          {found.map((r) => (
            <li key={r.name} className="result-row">
              <span><strong>{r.name}</strong>{r.official && <span className="badge ok"> official</span>} <span className="muted small">★ {r.stars}</span><br /><span className="muted small">{r.description}</span></span>
              <button type="button" onClick={() => onPick(r.name)}>Pull…</button>
            </li>
          ))}
        </ul>
      )}
    </form>
  );
}

export default function ContainerImages() {
  const { can } = useSession();
  const now = useTick(30000);
  const [filter, setFilter] = useState("");
  const [pick, setPick] = useState({ ref: "", n: 0 });
  const [pruned, setPruned] = useState("");
  const [deleteError, setDeleteError] = useState<unknown>(null);
  const list = useResource<ContainerImage[]>("/container-images", ["operation.updated", "instance."]);
  const f = filter.trim().toLowerCase();
  const all = list.data ?? [];
  const shown = all.filter((i) => !f || i.short_id.includes(f) || i.id.includes(f) || i.tags.some((t) => t.toLowerCase().includes(f)));
  const total = all.reduce((n, i) => n + i.size, 0);
  return (
    <div>
      <div className="toolbar">
        <input type="search" placeholder="Filter by tag or id" aria-label="Filter container images" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <span className="muted">{shown.length} of {all.length} · {bytes(total)}</span>
        {can("image:delete") && (
          <span className="push-right">
            <ActionButton confirm="Remove all dangling (untagged, unused) images?" onClick={async () => {
              const r = await api.post<{ removed: string[]; space_reclaimed: number }>("/container-images/prune");
              setPruned(`Removed ${r.removed.length} image(s), reclaimed ${bytes(r.space_reclaimed)}.`);
              await list.reload();
            }}>Prune dangling</ActionButton>
          </span>
        )}
      </div>
      {pruned && <p className="muted" role="status">{pruned}</p>}
      <ErrorBox error={list.error} />
      <div data-testid="images-error"><ErrorBox error={deleteError} /></div>
      {list.loading && !list.data ? (
        <Loading />
      ) : shown.length === 0 ? (
        <Empty>{all.length ? "No image matches the filter." : <>No container images. Build one from a <Link to="/projects">Dockerfile</Link> or pull one below.</>}</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Container images">
            <thead><tr><th>Tags</th><th className="hide-narrow">ID</th><th>Size</th><th className="hide-narrow">Created</th><th>In use</th><th>Actions</th></tr></thead>
            <tbody>
              {shown.map((i) => (
                <tr key={i.id} data-image={i.tags[0] ?? i.short_id}>
                  <td>{i.tags.length ? i.tags.map((t) => <div key={t} className="mono">{t}</div>) : <span className="muted">&lt;none&gt;</span>}</td>
                  <td className="hide-narrow mono small">{i.short_id}</td>
                  <td>{bytes(i.size)}</td>
                  <td className="hide-narrow">{ago(i.created, now)}</td>
                  <td>{i.in_use ? <span className="badge ok">{i.in_use} container{i.in_use > 1 ? "s" : ""}</span> : <span className="muted">unused</span>}</td>
                  <td>
                    <div className="row-actions">
                      {i.tags[0] && can("instance:create") && <Link className="button" to={`/containers?run=${q(i.tags[0])}`}>Run</Link>}
                      {can("image:delete") && (
                        <ActionButton className="danger" confirm={`Delete ${i.tags.join(", ") || i.short_id}?`} onClick={async () => {
                          setDeleteError(null);
                          try {
                            await api.del(`/container-images/${i.tags.length === 1 ? i.tags[0] : i.id}`);
                          } catch (err) {
                            setDeleteError(err); // shown above the table: a row is too narrow
                          }
                          await list.reload();
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
      {can("image:create") && (
        <div className="cards two images-forms">
          <PullForm key={pick.n} initial={pick.ref} onDone={() => void list.reload()} />
          <RegistrySearch onPick={(ref) => setPick({ ref, n: pick.n + 1 })} />
        </div>
      )}
    </div>
  );
}
