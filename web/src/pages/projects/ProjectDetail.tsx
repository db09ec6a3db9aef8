// A Dockerfile project: its files, an editor (CodeMirror, lazy) and builds with a live log.
import { lazy, Suspense, useEffect, useRef, useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, API, ApiError, currentWorkspace, q } from "../../api/client";
import { settled } from "../../api/operations";
import type { Operation } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Loading, PageHeader, StateBadge } from "../../components/ui";
import { bytes } from "../../format";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import type { ProjectDetail as Detail } from "./model";

const CodeEditor = lazy(() => import("./CodeEditor"));
const MAX_EDIT = 2 * 1024 * 1024;

const filePath = (project: string, path: string) => `/projects/${q(project)}/files/${path.split("/").map(q).join("/")}`;

/** Stream an operation's log (a streamed text response) line by line until it ends. */
async function streamLog(opId: string, onText: (text: string) => void, signal: AbortSignal): Promise<void> {
  const headers: Record<string, string> = { Accept: "text/plain, application/problem+json" };
  const ws = currentWorkspace();
  if (ws) headers["X-Cloudlet-Workspace"] = ws;
  const res = await fetch(`${API}/operations/${q(opId)}/log?follow=true`, { headers, signal });
  if (!res.ok || !res.body) {
    const body = await res.json().catch(() => ({}));
    throw new ApiError(res.status, body.code ?? "http_error", body.title ?? res.statusText, body.detail ?? "");
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onText(value);
  }
}

function Build({ project, beforeBuild }: { project: string; beforeBuild: () => Promise<void> }) {
  const [tag, setTag] = useState(`${project}:latest`);
  const [log, setLog] = useState("");
  const [op, setOp] = useState<Operation | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const view = useRef<HTMLPreElement>(null);
  const abort = useRef<AbortController>();
  useEffect(() => () => abort.current?.abort(), []);
  useEffect(() => {
    const el = view.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [log]);

  const build = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setLog("");
    setOp(null);
    abort.current?.abort();
    const controller = (abort.current = new AbortController());
    try {
      await beforeBuild();
      let started = await api.post<Operation>(`/projects/${q(project)}/build`, { tags: tag.trim() ? [tag.trim()] : [] });
      setOp(started);
      // The log can trail the operation by a moment; read it again while it is not there yet.
      for (let i = 0; ; i++) {
        try {
          await streamLog(started.id, (text) => setLog((old) => old + text), controller.signal);
          break;
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404 && i < 10)) throw err;
          await new Promise((r) => setTimeout(r, 300));
        }
      }
      started = await settled(started);
      setOp(started);
    } catch (err) {
      if (!controller.signal.aborted) setError(err);
    } finally {
      setBusy(false);
    }
  };
  const tags = (op?.result?.tags as string[] | undefined) ?? [];
  return (
    <section className="panel" aria-label="Build">
      <h2>Build</h2>
      <form className="inline-form" onSubmit={build}>
        <label className="field"><span>Image tag</span><input name="tag" value={tag} onChange={(e) => setTag(e.target.value)} placeholder={`${project}:latest`} /></label>
        <button type="submit" className="primary" disabled={busy}>{busy ? "Building…" : "Build"}</button>
      </form>
      <ErrorBox error={error} />
      {op && (
        <p className="build-status" data-testid="build-status">
          <StateBadge state={op.status} />{" "}
          {op.status === "succeeded" && (
            <>built <span className="mono">{tags.join(", ")}</span> <span className="mono small muted">{String(op.result?.id ?? "").slice(7, 19)}</span>{" "}
              {tags[0] && <Link to={`/containers?run=${q(tags[0])}`}>Run it</Link>}</>
          )}
          {op.status === "failed" && <span className="error-text">{op.error?.detail ?? op.error?.code}</span>}
        </p>
      )}
      {(log || busy) && <pre className="build-log" ref={view} data-testid="build-log" tabIndex={0} aria-label="Build log">{log || "waiting for output…"}</pre>}
    </section>
  );
}

export default function ProjectDetail() {
  const { name = "" } = useParams();
  const navigate = useNavigate();
  const { can } = useSession();
  const res = useResource<Detail>(`/projects/${q(name)}`);
  const [path, setPath] = useState<string | null>(null);
  const [content, setContent] = useState("");
  const [saved, setSaved] = useState("");
  const [fileError, setFileError] = useState<unknown>(null);
  const [loadingFile, setLoadingFile] = useState(false);
  const [newPath, setNewPath] = useState("");
  const [status, setStatus] = useState("");
  const canEdit = can("image:edit");
  const files = res.data?.files ?? [];
  const selected = path ?? (files.find((f) => f.path === "Dockerfile") ?? files[0])?.path ?? null;
  const info = files.find((f) => f.path === selected);
  const dirty = content !== saved;

  useEffect(() => {
    if (!selected) return;
    let stop = false;
    setLoadingFile(true);
    setFileError(null);
    setStatus("");
    api.get<string>(filePath(name, selected)).then(
      (text) => {
        if (stop) return;
        const t = typeof text === "string" ? text : JSON.stringify(text, null, 2);
        setContent(t);
        setSaved(t);
        setLoadingFile(false);
      },
      (err) => !stop && (setFileError(err), setLoadingFile(false)),
    );
    return () => {
      stop = true;
    };
  }, [name, selected]);

  const save = async () => {
    if (!selected) return;
    const text = content;
    await api.put(filePath(name, selected), new Blob([text], { type: "application/octet-stream" }));
    setSaved(text);
    setStatus(`Saved ${selected}.`);
    await res.reload();
  };
  const saveReporting = () => save().catch((err) => setFileError(err));
  const open = (p: string) => {
    if (dirty && !window.confirm(`Discard the unsaved changes to ${selected}?`)) return;
    setPath(p);
  };
  const addFile = async (e: FormEvent) => {
    e.preventDefault();
    const p = newPath.trim().replace(/^\/+/, "");
    if (!p) return;
    try {
      await api.put(filePath(name, p), new Blob([""], { type: "application/octet-stream" }));
      setNewPath("");
      await res.reload();
      setPath(p);
    } catch (err) {
      setFileError(err);
    }
  };
  const upload = async (list: FileList | null) => {
    try {
      for (const file of Array.from(list ?? [])) await api.put(filePath(name, file.name), file);
      await res.reload();
    } catch (err) {
      setFileError(err);
    }
  };

  if (res.error && !res.data) return (<><PageHeader title={name} /><ErrorBox error={res.error} /><Link to="/projects">All projects</Link></>);
  if (!res.data) return <Loading />;
  return (
    <>
      <p className="crumbs"><Link to="/projects">Dockerfiles</Link> /</p>
      <PageHeader title={name}>
        <span className="muted">{res.data.file_count} file{res.data.file_count === 1 ? "" : "s"} · {bytes(res.data.total_bytes)}</span>
        {can("image:delete") && (
          <ActionButton className="danger" confirm={`Delete project ${name} and all its files? Built images stay.`} onClick={async () => {
            await api.del(`/projects/${q(name)}`);
            navigate("/projects");
          }}>Delete project</ActionButton>
        )}
      </PageHeader>
      <div className="project-grid">
        <section className="panel files" aria-label="Files">
          <h2>Files</h2>
          {files.length === 0 && <Empty>No files yet.</Empty>}
          <ul className="plain file-list">
            {files.map((f) => (
              <li key={f.path} className={f.path === selected ? "selected" : ""}>
                <button type="button" className="link" aria-current={f.path === selected ? "true" : undefined} onClick={() => open(f.path)}>{f.path}</button>
                <span className="muted small">{bytes(f.size)}</span>
                {canEdit && (
                  <ActionButton className="icon" title={`Delete ${f.path}`} confirm={`Delete ${f.path}?`} onClick={async () => {
                    await api.del(filePath(name, f.path));
                    if (f.path === selected) setPath(null);
                    await res.reload();
                  }}><span aria-label={`Delete ${f.path}`}>×</span></ActionButton>
                )}
              </li>
            ))}
          </ul>
          {canEdit && (
            <>
              <form className="inline-form" onSubmit={addFile} aria-label="New file">
                <label className="field"><span>New file</span><input value={newPath} placeholder="e.g. app/index.html" onChange={(e) => setNewPath(e.target.value)} /></label>
                <button type="submit" disabled={!newPath.trim()}>Add</button>
              </form>
              <label className="field"><span>Upload files</span><input type="file" multiple onChange={(e) => { void upload(e.target.files); e.target.value = ""; }} /></label>
            </>
          )}
        </section>
        <div className="editor-column">
          <section className="panel" aria-label="Editor">
            <div className="toolbar">
              <h2 className="mono grow">{selected ?? "no file"}{dirty && <span className="muted" title="Unsaved changes"> ●</span>}</h2>
              {status && !dirty && <span className="muted small" role="status">{status}</span>}
              {canEdit && selected && <ActionButton className="primary" disabled={!dirty} title="Save (Ctrl+S)" onClick={save}>Save</ActionButton>}
            </div>
            <ErrorBox error={fileError} />
            {selected && info && info.size > MAX_EDIT ? (
              <Empty>{selected} is too large to edit here ({bytes(info.size)}).</Empty>
            ) : selected && !loadingFile ? (
              <Suspense fallback={<Loading />}>
                <CodeEditor key={selected} path={selected} value={content} onChange={setContent} onSave={() => void saveReporting()} label={`Contents of ${selected}`} />
              </Suspense>
            ) : selected ? <Loading /> : <Empty>Add a Dockerfile to start.</Empty>}
          </section>
          {can("image:create") && <Build project={name} beforeBuild={async () => { if (dirty) await save(); }} />}
        </div>
      </div>
    </>
  );
}
