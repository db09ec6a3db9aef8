import { useState } from "react";
import { Link, useNavigate } from "react-router-dom";
import { q } from "../../api/client";
import { Empty, ErrorBox, Loading, Modal, PageHeader } from "../../components/ui";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import { MyLeases } from "./MyLeases";
import { PoolForm } from "./PoolForm";
import { duration, POOL_EVENTS, type Pool } from "./types";

export default function PoolList() {
  const { can } = useSession();
  const navigate = useNavigate();
  const [creating, setCreating] = useState(false);
  const list = useResource<Pool[]>("/pools", POOL_EVENTS);
  const pools = list.data ?? [];
  return (
    <>
      <PageHeader title="Pools">
        {can("pool:create") && <button type="button" className="primary" onClick={() => setCreating(true)}>New pool</button>}
      </PageHeader>
      <p className="muted">A pool keeps VMs booted from one template; check one out, use it, check it back in.</p>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? (
        <Loading />
      ) : pools.length === 0 ? (
        <Empty>No pools yet.</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Pools">
            <thead>
              <tr><th>Name</th><th>Ready</th><th>Checked out</th><th>Provisioning</th><th className="hide-narrow">Size</th><th className="hide-narrow">Template</th><th className="hide-narrow">Lease</th></tr>
            </thead>
            <tbody>
              {pools.map((p) => (
                <tr key={p.id} data-pool={p.name}>
                  <td><Link to={`/pools/${q(p.name)}`}>{p.name}</Link></td>
                  <td data-count="available">{p.counts.available ?? 0}</td>
                  <td data-count="checked-out">{p.counts["checked-out"] ?? 0}</td>
                  <td data-count="provisioning">{(p.counts.provisioning ?? 0) + (p.counts.resetting ?? 0)}{p.counts.error ? <span className="badge bad">{p.counts.error} error</span> : null}</td>
                  <td className="hide-narrow">{p.vms.length} of {p.max_size} (≥ {p.min_ready} ready)</td>
                  <td className="hide-narrow">{String(p.template.image)} · {String(p.template.cpus)} vCPU · {String(p.template.memory)} MiB</td>
                  <td className="hide-narrow">{duration(p.lease_default)} (max {duration(p.lease_max)})</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <MyLeases pools={pools} onChange={() => void list.reload()} />
      <Modal title="New pool" open={creating} onClose={() => setCreating(false)} wide>
        <PoolForm onSaved={(pool) => {
          setCreating(false);
          navigate(`/pools/${q(pool.name)}`);
        }} />
      </Modal>
    </>
  );
}
