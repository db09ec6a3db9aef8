import { useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { api, q } from "../../api/client";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal, PageHeader, StateBadge } from "../../components/ui";
import { ago, countdown } from "../../format";
import { useAction, useResource, useTick } from "../../hooks";
import { useSession } from "../../session";
import { MyLeases } from "./MyLeases";
import { PoolForm } from "./PoolForm";
import { duration, POOL_EVENTS, type Checkout, type Lease, type Pool } from "./types";

const VM_STATE: Record<string, string> = { available: "ready", "checked-out": "checked_out", resetting: "provisioning" };

function CheckoutForm({ pool, onDone }: { pool: Pool; onDone: () => void }) {
  const [minutes, setMinutes] = useState("");
  const [got, setGot] = useState<Checkout | null>(null);
  const { busy, error, run } = useAction();
  return (
    <section className="panel" aria-labelledby="checkout-h">
      <h2 id="checkout-h">Check out a VM</h2>
      <form className="toolbar" onSubmit={async (e) => {
        e.preventDefault();
        await run(async () => {
          const body = minutes ? { lease: Math.round(Number(minutes) * 60) } : {};
          setGot(await api.post<Checkout>(`/pools/${q(pool.id)}/checkout?wait=30`, body));
          onDone();
        });
      }}>
        <Field label="Lease (minutes)" hint={`Default ${duration(pool.lease_default)}, at most ${duration(pool.lease_max)}.`}>
          <input name="lease" type="number" min={1} max={Math.floor(pool.lease_max / 60)} value={minutes} placeholder={String(pool.lease_default / 60)} onChange={(e) => setMinutes(e.target.value)} />
        </Field>
        <button type="submit" className="primary" disabled={busy}>{busy ? "Waiting for a VM…" : "Check out"}</button>
      </form>
      <ErrorBox error={error} />
      {got && (
        <div className="checkout-result" role="status" data-testid="checkout-result">
          <dl className="props">
            <dt>VM</dt><dd><Link to={`/vms/${q(got.name)}`}>{got.name}</Link></dd>
            <dt>Address</dt><dd className="mono" data-testid="checkout-ip">{got.ip ?? "–"}</dd>
            <dt>SSH</dt><dd><code>ssh {got.ssh_user}@{got.ip ?? "…"}</code></dd>
            <dt>Lease ends</dt><dd>{new Date(got.lease_expires_at).toLocaleString()}</dd>
          </dl>
        </div>
      )}
    </section>
  );
}

function History({ pool }: { pool: Pool }) {
  const now = useTick(30000);
  const list = useResource<Lease[]>(`/pools/${q(pool.id)}/history?limit=50`, ["pool."]);
  if (list.error) return <ErrorBox error={list.error} />;
  if (!list.data?.length) return <Empty>No leases yet.</Empty>;
  return (
    <div className="table-wrap">
      <table aria-label="Lease history">
        <thead><tr><th>VM</th><th>Holder</th><th>Started</th><th>Ended</th><th>How</th></tr></thead>
        <tbody>
          {list.data.map((l) => (
            <tr key={`${l.instance_id}-${l.started_at}`}>
              <td>{l.instance_name} <span className="muted mono">{l.ip}</span></td>
              <td>{l.holder}</td>
              <td>{ago(l.started_at, now)}</td>
              <td>{l.ended_at ? ago(l.ended_at, now) : "–"}</td>
              <td>{l.end_reason ?? "held"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export default function PoolDetail() {
  const { ref = "" } = useParams();
  const navigate = useNavigate();
  const [editing, setEditing] = useState(false);
  const { can, me } = useSession();
  const now = useTick(1000);
  const res = useResource<Pool>(`/pools/${q(ref)}`, POOL_EVENTS);
  const pool = res.data;
  if (res.error && !pool) return (<><PageHeader title={ref} /><ErrorBox error={res.error} /><Link to="/pools">All pools</Link></>);
  if (!pool) return <Loading />;
  const base = `/pools/${q(pool.id)}`;
  const canEdit = can("pool:edit");
  const t = pool.template;
  return (
    <>
      <PageHeader title={pool.name}>
        <Link to="/pools">All pools</Link>
        {canEdit && (
          <ActionButton disabled={pool.vms.length >= pool.max_size} title="Boot one more VM now" onClick={async () => {
            await api.post(`${base}/vms`, { count: 1 });
            await res.reload();
          }}>Add VM</ActionButton>
        )}
        {canEdit && <button type="button" onClick={() => setEditing(true)}>Edit</button>}
        {can("pool:delete") && (
          <ActionButton className="danger" confirm={`Delete pool ${pool.name} and its VMs?`} onClick={async () => {
            await api.del(base);
            navigate("/pools");
          }}>Delete pool</ActionButton>
        )}
      </PageHeader>
      <Modal title={`Edit pool ${pool.name}`} open={editing} onClose={() => setEditing(false)} wide>
        <PoolForm pool={pool} onSaved={(saved) => {
          setEditing(false);
          if (saved.name !== pool.name) navigate(`/pools/${q(saved.name)}`, { replace: true });
          else void res.reload();
        }} />
      </Modal>
      <div className="cards">
        <div className="card"><h2>Ready</h2><p className="big" data-testid="count-available">{pool.counts.available ?? 0}</p></div>
        <div className="card"><h2>Checked out</h2><p className="big" data-testid="count-checked-out">{pool.counts["checked-out"] ?? 0}</p></div>
        <div className="card"><h2>Provisioning</h2><p className="big" data-testid="count-provisioning">{(pool.counts.provisioning ?? 0) + (pool.counts.resetting ?? 0)}</p></div>
        <div className="card">
          <h2>Template</h2>
          <p className="small">{String(t.image)} · {String(t.cpus)} vCPU · {String(t.memory)} MiB · {String(t.disk)} GB · {String(t.network)}</p>
          <p className="small muted">{pool.min_ready} kept ready, at most {pool.max_size}; lease {duration(pool.lease_default)} (max {duration(pool.lease_max)}); on check-in: {pool.on_checkin}</p>
        </div>
      </div>
      {can("pool:view") && <CheckoutForm pool={pool} onDone={() => void res.reload()} />}
      <section className="panel" aria-labelledby="vms-h">
        <h2 id="vms-h">VMs</h2>
        {pool.vms.length === 0 ? <Empty>No VMs yet; the pool boots {pool.min_ready}.</Empty> : (
          <div className="table-wrap">
            <table aria-label="Pool VMs">
              <thead><tr><th>Name</th><th>State</th><th>Address</th><th>Holder</th><th>Lease ends in</th><th>Actions</th></tr></thead>
              <tbody>
                {pool.vms.map((vm) => (
                  <tr key={vm.instance_id} data-vm={vm.name ?? vm.instance_id}>
                    <td>{vm.name ? <Link to={`/vms/${q(vm.name)}`}>{vm.name}</Link> : <span className="muted">…</span>}</td>
                    <td><span data-pool-state={vm.status}><StateBadge state={VM_STATE[vm.status] ?? vm.status} /></span></td>
                    <td className="mono">{vm.ip ?? "–"}</td>
                    <td>{vm.holder ?? "–"}</td>
                    <td>{vm.lease_expires_at ? countdown(vm.lease_expires_at, now) : "–"}</td>
                    <td>
                      <div className="row-actions">
                        {vm.status === "checked-out" && (vm.holder === me?.username || canEdit) && (
                          <ActionButton onClick={async () => { await api.post(`${base}/checkin`, { id: vm.instance_id }); await res.reload(); }}>Check in</ActionButton>
                        )}
                        {canEdit && (vm.status === "available" || vm.status === "error") && (
                          <ActionButton className="danger" confirm={`Delete ${vm.name ?? "this VM"} from the pool?`} onClick={async () => { await api.del(`${base}/vms/${q(vm.instance_id)}`); await res.reload(); }}>Remove</ActionButton>
                        )}
                      </div>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
      <MyLeases pools={[pool]} onChange={() => void res.reload()} />
      <section className="panel" aria-labelledby="hist-h">
        <h2 id="hist-h">History</h2>
        <History pool={pool} />
      </section>
    </>
  );
}
