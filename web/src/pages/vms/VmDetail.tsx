import { lazy, Suspense, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, q, wsUrl } from "../../api/client";
import { succeeded } from "../../api/operations";
import type { CloudEvent, Instance, Operation, Page, Snapshot, Volume } from "../../api/types";
import { Metrics } from "../../components/Metrics";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal, PageHeader, Progress, StateBadge, Tabs } from "../../components/ui";
import { ago, opLabel } from "../../format";
import { useResource, useTick } from "../../hooks";
import { useEvents } from "../../live";
import { useSession } from "../../session";
import { vmActions } from "./actions";

const Terminal = lazy(() => import("../../components/Terminal"));
const VncConsole = lazy(() => import("../../components/VncConsole"));

type Tab = "summary" | "console" | "serial" | "disks" | "snapshots" | "metrics" | "events";

function ResizeForm({ vm, onDone }: { vm: Instance; onDone: () => void }) {
  const [cpus, setCpus] = useState(vm.cpus);
  const [memory, setMemory] = useState(vm.memory);
  const [disk, setDisk] = useState(vm.disk);
  const [error, setError] = useState<unknown>(null);
  const live = vm.state === "running";
  return (
    <form onSubmit={async (e) => {
      e.preventDefault();
      try {
        const body: Record<string, number> = {};
        if (cpus !== vm.cpus) body.cpus = cpus;
        if (memory !== vm.memory) body.memory = memory;
        if (disk !== vm.disk) body.disk = disk;
        await api.post(`/instances/${q(vm.id)}/resize`, body);
        onDone();
      } catch (err) {
        setError(err);
      }
    }}>
      {live && <p className="muted">It runs: vCPUs and memory can only grow now (memory in 128 MiB steps), the disk too.</p>}
      <div className="grid-2">
        <Field label="vCPUs"><input type="number" min={1} value={cpus} onChange={(e) => setCpus(Number(e.target.value))} /></Field>
        <Field label="Memory (MiB)"><input type="number" min={64} step={live ? 128 : 64} value={memory} onChange={(e) => setMemory(Number(e.target.value))} /></Field>
        <Field label="Disk (GB)" hint="Disks only grow."><input type="number" min={vm.disk} value={disk} onChange={(e) => setDisk(Number(e.target.value))} /></Field>
      </div>
      <ErrorBox error={error} />
      <div className="form-actions"><button type="submit" className="primary">Resize</button></div>
    </form>
  );
}

/** The VM's root disk and its extra volumes: attach a free volume or a new one (hot-plugged
 * while it runs), detach. */
function Disks({ vm, canEdit }: { vm: Instance; canEdit: boolean }) {
  const base = `/instances/${q(vm.id)}/volumes`;
  const attached = useResource<Volume[]>(base, ["operation."]);
  const all = useResource<Volume[]>("/volumes", ["operation."]);
  const free = (all.data ?? []).filter((v) => !v.attached_to_id && v.status === "ready");
  const [pick, setPick] = useState("");
  const [name, setName] = useState("");
  const [size, setSize] = useState(1);
  const reload = async () => {
    await Promise.all([attached.reload(), all.reload()]);
  };
  const attach = async (volume: string) => {
    const op = await api.post<Operation>(base, { volume });
    await succeeded(op);
    await reload();
  };
  return (
    <div>
      <div className="table-wrap">
        <table aria-label="Disks">
          <thead><tr><th>Disk</th><th>Size</th><th>Device</th><th className="hide-narrow">Serial</th><th /></tr></thead>
          <tbody>
            <tr><td>root ({vm.image ?? "installer"})</td><td>{vm.disk} GB</td><td className="mono">vda</td><td className="hide-narrow">–</td><td /></tr>
            {(attached.data ?? []).map((v) => (
              <tr key={v.id} data-volume={v.name}>
                <td>{v.name} <span className="muted small">({v.pool})</span></td><td>{v.size} GB</td><td className="mono">{v.target ?? "–"}</td>
                <td className="mono small hide-narrow">{v.serial}</td>
                <td>{canEdit && (
                  <ActionButton confirm={`Detach ${v.name} from ${vm.name}?`} onClick={async () => {
                    await succeeded(await api.del<Operation>(`${base}/${q(v.id)}`));
                    await reload();
                  }}>Detach</ActionButton>
                )}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorBox error={attached.error} />
      {canEdit && (
        <div className="cards two" style={{ marginTop: "1rem" }}>
          <form className="card" onSubmit={(e) => e.preventDefault()} aria-label="Attach a volume">
            <h3>Attach a volume</h3>
            <Field label="Free volume">
              <select value={pick} onChange={(e) => setPick(e.target.value)}>
                <option value="">{free.length ? "choose…" : "no free volumes"}</option>
                {free.map((v) => <option key={v.id} value={v.id}>{v.name} ({v.size} GB)</option>)}
              </select>
            </Field>
            <ActionButton disabled={!pick} onClick={async () => { await attach(pick); setPick(""); }}>Attach</ActionButton>
          </form>
          <form className="card" onSubmit={(e) => e.preventDefault()} aria-label="New volume">
            <h3>New volume</h3>
            <div className="grid-2">
              <Field label="Volume name"><input value={name} onChange={(e) => setName(e.target.value)} /></Field>
              <Field label="Size (GB)"><input type="number" min={1} value={size} onChange={(e) => setSize(Number(e.target.value))} /></Field>
            </div>
            <ActionButton disabled={!name} onClick={async () => {
              const made = await succeeded(await api.post<Operation>("/volumes", { name, size }));
              await attach(String(made.result?.volume_id ?? name));
              setName("");
            }}>Create and attach</ActionButton>
          </form>
        </div>
      )}
    </div>
  );
}

function Snapshots({ vm, canEdit }: { vm: Instance; canEdit: boolean }) {
  const list = useResource<Snapshot[]>(`/instances/${q(vm.id)}/snapshots`, ["operation.", "instance."]);
  const [name, setName] = useState("");
  const base = `/instances/${q(vm.id)}/snapshots`;
  return (
    <div>
      {canEdit && (
        <form className="toolbar" onSubmit={(e) => e.preventDefault()} aria-label="New snapshot">
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="snapshot name" aria-label="Snapshot name" style={{ maxWidth: "16rem" }} />
          <ActionButton disabled={!name} onClick={async () => {
            await api.post(base, { name });
            setName("");
            await list.reload();
          }}>Take snapshot</ActionButton>
          <span className="muted small">{vm.state === "running" ? "Disk and memory (it runs)." : "Disk only."}</span>
        </form>
      )}
      <ErrorBox error={list.error} />
      {list.data?.length === 0 && <Empty>No snapshots.</Empty>}
      {!!list.data?.length && (
        <div className="table-wrap">
          <table aria-label="Snapshots">
            <thead><tr><th>Name</th><th>Memory</th><th className="hide-narrow">Size then</th><th>Taken</th><th>Status</th><th /></tr></thead>
            <tbody>
              {list.data.map((s) => (
                <tr key={s.id}>
                  <td>{s.name}</td><td>{s.with_memory ? "yes" : "no"}</td><td className="hide-narrow">{s.disk != null ? `${s.cpus} vCPU · ${s.memory} MiB · ${s.disk} GB` : "–"}</td><td>{ago(s.created_at)}</td><td><StateBadge state={s.status} /></td>
                  <td>{canEdit && (
                    <div className="row-actions">
                      <ActionButton confirm={`Revert ${vm.name} to ${s.name}? Changes since then are lost, and its size goes back to what it was then.`} onClick={async () => { await api.post(`${base}/${q(s.name)}/revert`); await list.reload(); }}>Revert</ActionButton>
                      <ActionButton className="danger" confirm={`Delete snapshot ${s.name}?`} onClick={async () => { await api.del(`${base}/${q(s.name)}`); await list.reload(); }}>Delete</ActionButton>
                    </div>
                  )}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

/** What happened to this VM: its state changes seen live since the page opened, and its
 * operations (with progress while they run). */
function Activity({ vm }: { vm: Instance }) {
  const now = useTick(10000);
  const ops = useResource<Page<Operation>>("/operations?limit=200", ["operation."]);
  const [changes, setChanges] = useState<CloudEvent[]>([]);
  useEvents(["instance."], (e) => {
    if (e.data.id === vm.id) setChanges((all) => [e, ...all].slice(0, 50));
  });
  const mine = (ops.data?.items ?? []).filter((op) => op.target_id === vm.id);
  return (
    <>
      {changes.length > 0 && (
        <ul className="plain" aria-label="State changes">
          {changes.map((e, i) => (
            <li key={i}>{e.type === "instance.deleted" ? "deleted" : <StateBadge state={String(e.data.state)} />} <span className="muted">{ago(e.time, now)}</span></li>
          ))}
        </ul>
      )}
      {mine.length ? <ActivityList ops={mine} now={now} /> : <Empty>No operations yet.</Empty>}
    </>
  );
}

function ActivityList({ ops, now }: { ops: Operation[]; now: number }) {
  return (
    <ul className="ops" aria-label="Operations">
      {ops.map((op) => (
        <li key={op.id}>
          <StateBadge state={op.status} /> {opLabel(op.kind)} <span className="muted">{ago(op.created_at, now)}</span>
          {op.status === "running" && <Progress value={op.progress} label={op.kind} />}
          {op.error?.detail && <div className="error">{op.error.detail}</div>}
        </li>
      ))}
    </ul>
  );
}

export default function VmDetail() {
  const { ref = "" } = useParams();
  const navigate = useNavigate();
  const { can } = useSession();
  const [tab, setTab] = useState<Tab>("summary");
  const [dialog, setDialog] = useState<"resize" | "rename" | "clone" | null>(null);
  const [newName, setNewName] = useState("");
  const vmRes = useResource<Instance>(`/instances/${q(ref)}`, ["instance."]);
  const vm = vmRes.data;
  const canEdit = can("instance:edit");
  const serialUrl = vm ? wsUrl(`/instances/${q(vm.id)}/console/serial`) : "";

  if (vmRes.error && !vm) return (<><PageHeader title={ref} /><ErrorBox error={vmRes.error} /><Link to="/vms">All VMs</Link></>);
  if (!vm) return <Loading />;
  const running = vm.state === "running";
  const act = (action: string) => api.post(`/instances/${q(vm.id)}/actions/${action}`).then(() => vmRes.reload());

  return (
    <>
      <PageHeader title={vm.name}>
        <StateBadge state={vm.state} />
        {canEdit && vmActions(vm).map(([action, label]) => (
          <ActionButton key={action} onClick={() => act(action)}>{label}</ActionButton>
        ))}
        {canEdit && <button type="button" onClick={() => setDialog("resize")}>Resize</button>}
        {canEdit && <button type="button" onClick={() => { setNewName(vm.name); setDialog("rename"); }}>Rename</button>}
        {can("instance:create") && <button type="button" onClick={() => { setNewName(`${vm.name}-clone`); setDialog("clone"); }}>Clone</button>}
        {can("instance:delete") && (
          <ActionButton className="danger" confirm={`Delete ${vm.name} with its disk? This cannot be undone.`} onClick={async () => {
            await api.del(`/instances/${q(vm.id)}?force=true`);
            navigate("/vms");
          }}>Delete</ActionButton>
        )}
      </PageHeader>
      {vm.error && <div className="error">{vm.error}</div>}
      <Tabs<Tab> current={tab} onChange={setTab} tabs={[["summary", "Summary"], ["console", "Console"], ["serial", "Serial console"], ["disks", "Disks"], ["snapshots", "Snapshots"], ["metrics", "Metrics"], ["events", "Events"]]} />
      {tab === "summary" && (
        <div className="detail-grid">
          <section className="panel">
            <dl className="props">
              <dt>Address</dt><dd className="mono" data-testid="vm-ip">{vm.ip ?? "–"}</dd>
              <dt>Size</dt><dd>{vm.cpus} vCPU · {vm.memory} MiB · {vm.disk} GB disk</dd>
              <dt>Image</dt><dd>{vm.image ?? "–"}</dd>
              <dt>Hostname</dt><dd>{vm.hostname}</dd>
              <dt>Host</dt><dd>{vm.host}</dd>
              <dt>Created</dt><dd>{new Date(vm.created_at).toLocaleString()}</dd>
              <dt>ID</dt><dd className="mono small">{vm.id}</dd>
            </dl>
          </section>
          <section className="panel">
            <h2>Network interfaces</h2>
            <ul className="plain">
              {vm.nics.map((n) => (<li key={n.mac}><strong>{n.network}</strong> <span className="mono">{n.ip}</span> <span className="muted small mono">{n.mac}</span></li>))}
            </ul>
          </section>
        </div>
      )}
      <Suspense fallback={<Loading />}>
        {tab === "console" && (running ? <VncConsole vm={vm.id} /> : <Empty>The screen shows while the VM runs.</Empty>)}
        {tab === "serial" && (running ? <Terminal url={serialUrl} label="Serial console" /> : <Empty>The serial console opens while the VM runs.</Empty>)}
      </Suspense>
      {tab === "disks" && <Disks vm={vm} canEdit={canEdit} />}
      {tab === "snapshots" && <Snapshots vm={vm} canEdit={canEdit} />}
      {tab === "metrics" && <Metrics instance={vm.id} running={running} />}
      {tab === "events" && <Activity vm={vm} />}
      <Modal title={`Resize ${vm.name}`} open={dialog === "resize"} onClose={() => setDialog(null)}>
        <ResizeForm vm={vm} onDone={() => { setDialog(null); void vmRes.reload(); }} />
      </Modal>
      <Modal title={dialog === "clone" ? `Clone ${vm.name}` : `Rename ${vm.name}`} open={dialog === "rename" || dialog === "clone"} onClose={() => setDialog(null)}>
        <form onSubmit={(e) => e.preventDefault()}>
          <Field label="New name"><input value={newName} onChange={(e) => setNewName(e.target.value)} autoFocus /></Field>
          {dialog === "clone" && <p className="muted">{running ? "A running VM is cloned from a snapshot; stop it or pick one on the Snapshots tab." : "A linked clone shares the image's data."}</p>}
          <div className="form-actions">
            <ActionButton className="primary" onClick={async () => {
              if (dialog === "rename") {
                await api.patch(`/instances/${q(vm.id)}`, { name: newName });
                setDialog(null);
                navigate(`/vms/${q(newName)}`, { replace: true });
              } else {
                await api.post(`/instances/${q(vm.id)}/clone`, { name: newName });
                setDialog(null);
                navigate(`/vms/${q(newName)}`);
              }
            }}>{dialog === "clone" ? "Clone" : "Rename"}</ActionButton>
          </div>
        </form>
      </Modal>
    </>
  );
}
