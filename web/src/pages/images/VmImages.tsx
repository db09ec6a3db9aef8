// The "VM images" tab: the workspace's disk images, import from a URL (with the operation's
// progress, live), upload a file (with the upload's progress), edit properties, delete.
import { useEffect, useState, type FormEvent } from "react";
import { API, api, ApiError, currentWorkspace, q } from "../../api/client";
import type { Image, Operation } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal, Progress, StateBadge } from "../../components/ui";
import { bytes } from "../../format";
import { useAction, useResource } from "../../hooks";
import { useEvents } from "../../live";
import { useSession } from "../../session";

type Dialog = "url" | "upload" | { edit: Image } | null;

function csrf(): string {
  const found = document.cookie.split("; ").find((c) => c.startsWith("cloudlet_csrf="));
  return found ? decodeURIComponent(found.slice("cloudlet_csrf=".length)) : "";
}

/** POST a file as the request body with XMLHttpRequest, for its upload progress. */
function upload(path: string, file: File, onProgress: (percent: number) => void): Promise<Operation> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API + path);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json, application/problem+json");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    const ws = currentWorkspace();
    if (ws) xhr.setRequestHeader("X-Cloudlet-Workspace", ws);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress((100 * e.loaded) / e.total);
    xhr.onerror = () => reject(new Error("the upload failed (network error)"));
    xhr.onload = () => {
      let body: Record<string, string> = {};
      try {
        body = JSON.parse(xhr.responseText) as Record<string, string>;
      } catch {
        /* not JSON */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body as unknown as Operation);
      else reject(new ApiError(xhr.status, body.code ?? "http_error", body.title ?? xhr.statusText, body.detail ?? `HTTP ${xhr.status}`));
    };
    xhr.send(file);
  });
}

/** Follow one operation: its events over the websocket, and a read now and then (an event
 * sent before the page subscribed is not missed). */
function useOperation(initial: Operation | null): Operation | null {
  const [op, setOp] = useState<Operation | null>(initial);
  useEffect(() => setOp(initial), [initial]);
  useEvents(["operation.updated"], (e) => {
    const next = e.data as unknown as Operation;
    if (initial && next.id === initial.id) setOp(next);
  });
  const id = initial?.id;
  const final = op?.status === "succeeded" || op?.status === "failed" || op?.status === "cancelled";
  useEffect(() => {
    if (!id || final) return;
    let stop = false;
    const read = () => api.get<Operation>(`/operations/${q(id)}`).then((o) => !stop && setOp(o)).catch(() => undefined);
    void read();
    const timer = setInterval(() => void read(), 2000);
    return () => {
      stop = true;
      clearInterval(timer);
    };
  }, [id, final]);
  return op;
}

function OperationStatus({ op }: { op: Operation | null }) {
  const live = useOperation(op);
  if (!live) return null;
  return (
    <div className="op-status" data-testid="import-operation" data-status={live.status}>
      <div className="meter-label"><span><StateBadge state={live.status} /> {live.message ?? live.kind.replace(/[._]/g, " ")}</span><span>{Math.round(live.progress)}%</span></div>
      <Progress value={live.status === "succeeded" ? 100 : live.progress} label="Import progress" />
      {live.status === "failed" && <div className="error" role="alert">Import failed: {live.error?.detail ?? live.error?.code ?? "error"}</div>}
    </div>
  );
}

function Properties({ os, setOs, minDisk, setMinDisk, minMemory, setMinMemory }: {
  os: string; setOs: (v: string) => void; minDisk: string; setMinDisk: (v: string) => void;
  minMemory: string; setMinMemory: (v: string) => void;
}) {
  return (
    <div className="grid-2">
      <Field label="Guest OS"><input name="os" value={os} placeholder="debian12" onChange={(e) => setOs(e.target.value)} /></Field>
      <Field label="Min disk (GB)"><input name="min_disk" type="number" min={1} value={minDisk} onChange={(e) => setMinDisk(e.target.value)} /></Field>
      <Field label="Min memory (MiB)"><input name="min_memory" type="number" min={1} value={minMemory} onChange={(e) => setMinMemory(e.target.value)} /></Field>
    </div>
  );
}

const num = (v: string) => (v.trim() ? Number(v) : null);

function ImportForm({ mode }: { mode: "url" | "upload" }) {
  const [name, setName] = useState("");
  const [url, setUrl] = useState("");
  const [sha, setSha] = useState("");
  const [format, setFormat] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [os, setOs] = useState("");
  const [minDisk, setMinDisk] = useState("");
  const [minMemory, setMinMemory] = useState("");
  const [sent, setSent] = useState<number | null>(null);
  const [op, setOp] = useState<Operation | null>(null);
  const { busy, error, run } = useAction();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setOp(null);
    await run(async () => {
      if (mode === "url") {
        setOp(await api.post<Operation>("/images", {
          name: name.trim(), url: url.trim(), sha256: sha.trim() || null, format: format || null,
          os: os.trim() || null, min_disk: num(minDisk), min_memory: num(minMemory),
        }));
      } else if (file) {
        const params = new URLSearchParams({ name: name.trim() });
        if (format) params.set("format", format);
        if (os.trim()) params.set("os", os.trim());
        if (minDisk.trim()) params.set("min_disk", minDisk.trim());
        if (minMemory.trim()) params.set("min_memory", minMemory.trim());
        setSent(0);
        setOp(await upload(`/images/upload?${params.toString()}`, file, setSent));
      }
    });
  };

  return (
    <form onSubmit={submit} aria-label={mode === "url" ? "Import from URL" : "Upload an image"}>
      <Field label="Name"><input name="name" required value={name} onChange={(e) => setName(e.target.value)} autoFocus /></Field>
      {mode === "url" ? (
        <>
          <Field label="URL" hint="http(s); the server downloads it.">
            <input name="url" type="url" required value={url} placeholder="https://cloud.debian.org/…/debian-12-generic-amd64.qcow2" onChange={(e) => setUrl(e.target.value)} />
          </Field>
          <Field label="SHA-256 (optional)" hint="Checked after the download.">
            <input name="sha256" pattern="[0-9a-fA-F]{64}" value={sha} onChange={(e) => setSha(e.target.value)} />
          </Field>
        </>
      ) : (
        <Field label="File" hint="qcow2, raw or ISO.">
          <input name="file" type="file" required onChange={(e) => {
            const f = e.target.files?.[0] ?? null;
            setFile(f);
            if (f && !name) setName(f.name.replace(/\.(qcow2|img|raw|iso)$/i, "").replace(/[^a-zA-Z0-9-]/g, "-"));
          }} />
        </Field>
      )}
      <Field label="Format">
        <select name="format" value={format} onChange={(e) => setFormat(e.target.value)}>
          <option value="">detect</option><option value="qcow2">qcow2</option><option value="raw">raw</option><option value="iso">iso</option>
        </select>
      </Field>
      <Properties {...{ os, setOs, minDisk, setMinDisk, minMemory, setMinMemory }} />
      {sent !== null && mode === "upload" && (
        <div className="op-status">
          <div className="meter-label"><span>Upload</span><span>{Math.round(sent)}%</span></div>
          <Progress value={sent} label="Upload progress" />
        </div>
      )}
      <OperationStatus op={op} />
      <ErrorBox error={error} />
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy}>{busy ? (mode === "url" ? "Starting…" : "Uploading…") : mode === "url" ? "Import" : "Upload"}</button>
      </div>
    </form>
  );
}

function EditForm({ image, onDone }: { image: Image; onDone: () => void }) {
  const { me } = useSession();
  const [os, setOs] = useState(image.os ?? "");
  const [minDisk, setMinDisk] = useState(image.min_disk?.toString() ?? "");
  const [minMemory, setMinMemory] = useState(image.min_memory?.toString() ?? "");
  const [pub, setPub] = useState(image.public);
  const [error, setError] = useState<unknown>(null);
  return (
    <form aria-label={`Edit ${image.name}`} onSubmit={async (e) => {
      e.preventDefault();
      try {
        const body: Record<string, unknown> = { os: os.trim() || null, min_disk: num(minDisk), min_memory: num(minMemory) };
        if (pub !== image.public) body.public = pub;
        await api.patch(`/images/${q(image.id)}`, body);
        onDone();
      } catch (err) {
        setError(err);
      }
    }}>
      <Properties {...{ os, setOs, minDisk, setMinDisk, minMemory, setMinMemory }} />
      {me?.is_admin && <label className="choice"><input type="checkbox" checked={pub} onChange={(e) => setPub(e.target.checked)} /> Public (every workspace sees it)</label>}
      <ErrorBox error={error} />
      <div className="form-actions"><button type="submit" className="primary">Save</button></div>
    </form>
  );
}

export default function VmImages() {
  const { can } = useSession();
  const [dialog, setDialog] = useState<Dialog>(null);
  const [failed, setFailed] = useState<unknown>(null);
  const list = useResource<Image[]>("/images", ["operation.", "image."]);
  const images = list.data ?? [];
  return (
    <>
      <div className="toolbar">
        {can("image:create") && (
          <>
            <button type="button" className="primary" onClick={() => setDialog("url")}>Import from URL</button>
            <button type="button" onClick={() => setDialog("upload")}>Upload</button>
          </>
        )}
        <span className="muted">{images.length} images</span>
      </div>
      <ErrorBox error={list.error} />
      <ErrorBox error={failed} />
      {list.loading && !list.data ? <Loading /> : images.length === 0 ? <Empty>No VM images yet. Import one from a URL or upload a file.</Empty> : (
        <div className="table-wrap">
          <table aria-label="VM images">
            <thead><tr><th>Name</th><th>Status</th><th>Format</th><th>Size</th><th className="hide-narrow">OS</th><th className="hide-narrow">Min disk / memory</th><th>Actions</th></tr></thead>
            <tbody>
              {images.map((i) => (
                <tr key={i.id} data-image={i.name}>
                  <td>{i.name}{i.public && <span className="badge off" title="Shared with every workspace"> public</span>}</td>
                  <td><StateBadge state={i.status} /></td>
                  <td>{i.format ?? "–"}</td>
                  <td title={`file ${bytes(i.file_size)}`}>{bytes(i.virtual_size ?? i.file_size)}</td>
                  <td className="hide-narrow">{i.os ?? "–"}</td>
                  <td className="hide-narrow">{i.min_disk ? `${i.min_disk} GB` : "–"} / {i.min_memory ? `${i.min_memory} MiB` : "–"}</td>
                  <td>
                    <div className="row-actions">
                      {can("image:edit") && <button type="button" onClick={() => setDialog({ edit: i })}>Edit</button>}
                      {can("image:delete") && (
                        <ActionButton className="danger" confirm={`Delete image ${i.name}?`} onClick={async () => {
                          setFailed(null);
                          try {
                            await api.del(`/images/${q(i.id)}`);
                          } catch (err) {
                            setFailed(err); // "in use" is shown above the table
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
      <Modal title="Import from URL" open={dialog === "url"} onClose={() => setDialog(null)}>
        <ImportForm mode="url" />
      </Modal>
      <Modal title="Upload an image" open={dialog === "upload"} onClose={() => setDialog(null)}>
        <ImportForm mode="upload" />
      </Modal>
      <Modal title={typeof dialog === "object" && dialog ? `Edit ${dialog.edit.name}` : "Edit"} open={typeof dialog === "object" && dialog !== null} onClose={() => setDialog(null)}>
        {typeof dialog === "object" && dialog && <EditForm image={dialog.edit} onDone={() => { setDialog(null); void list.reload(); }} />}
      </Modal>
    </>
  );
}
