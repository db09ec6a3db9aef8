import { Link } from "react-router-dom";
import { api, q } from "../../api/client";
import { ActionButton, Empty, ErrorBox } from "../../components/ui";
import { countdown } from "../../format";
import { useResource, useTick } from "../../hooks";
import { POOL_EVENTS, type Lease, type Pool } from "./types";

/** The caller's current leases in every pool, each with a live countdown to its end. */
export function MyLeases({ pools, onChange }: { pools: Pool[]; onChange?: () => void }) {
  const now = useTick(1000);
  const leases = useResource<Lease[]>("/leases", POOL_EVENTS);
  const poolName = (id: string) => pools.find((p) => p.id === id)?.name ?? id;
  const done = async () => {
    await leases.reload();
    onChange?.();
  };
  return (
    <section className="panel" aria-labelledby="my-leases">
      <h2 id="my-leases">My leases</h2>
      <ErrorBox error={leases.error} />
      {leases.data?.length === 0 && <Empty>You hold no VMs. Check one out of a pool.</Empty>}
      {!!leases.data?.length && (
        <div className="table-wrap">
          <table aria-label="My leases">
            <thead><tr><th>VM</th><th>Address</th><th>Pool</th><th>Ends in</th><th>Actions</th></tr></thead>
            <tbody>
              {leases.data.map((l) => {
                const pool = poolName(l.pool_id);
                const left = new Date(l.expires_at).getTime() - now;
                return (
                  <tr key={l.instance_id} data-lease={l.instance_name}>
                    <td><Link to={`/vms/${q(l.instance_name)}`}>{l.instance_name}</Link></td>
                    <td className="mono">{l.ip ?? "–"}</td>
                    <td><Link to={`/pools/${q(pool)}`}>{pool}</Link></td>
                    <td>
                      <span className={`countdown ${left < 300_000 ? "soon" : ""}`} data-testid="lease-countdown" title={new Date(l.expires_at).toLocaleString()}>
                        {countdown(l.expires_at, now)}
                      </span>
                    </td>
                    <td>
                      <div className="row-actions">
                        <ActionButton title="Extend the lease by an hour from now (up to the pool's maximum)" onClick={async () => {
                          await api.post(`/pools/${q(l.pool_id)}/extend`, { id: l.instance_id, seconds: 3600 });
                          await done();
                        }}>Extend 1 h</ActionButton>
                        <ActionButton className="danger" confirm={`Check ${l.instance_name} in? The pool may reset it.`} onClick={async () => {
                          await api.post(`/pools/${q(l.pool_id)}/checkin`, { id: l.instance_id });
                          await done();
                        }}>Check in</ActionButton>
                      </div>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
