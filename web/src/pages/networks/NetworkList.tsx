import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api, q } from "../../api/client";
import { succeeded } from "../../api/operations";
import type { Instance, Network, Operation, Page } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Field, Loading, Modal, PageHeader, StateBadge } from "../../components/ui";
import { useAction, useResource } from "../../hooks";
import { useSession } from "../../session";

/** Run an operation-returning call and follow it to its end; a failure is thrown. */
async function finished(path: string, body?: unknown, method: "post" | "del" = "post"): Promise<Operation> {
  return succeeded(method === "post" ? await api.post<Operation>(`${path}?wait=30`, body) : await api.del<Operation>(`${path}?wait=30`));
}

function CreateNetwork({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [cidr, setCidr] = useState("");
  const [mode, setMode] = useState("nat");
  const { busy, error, run } = useAction();
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      await finished("/networks", { name: name.trim(), cidr: cidr.trim(), mode });
      onDone();
    });
  };
  return (
    <form onSubmit={submit} aria-label="New network">
      <Field label="Name"><input name="name" required value={name} onChange={(e) => setName(e.target.value)} autoFocus /></Field>
      <Field label="CIDR" hint="A private IPv4 network, /16 to /29.">
        <input name="cidr" required value={cidr} placeholder="10.48.0.0/24" onChange={(e) => setCidr(e.target.value)} />
      </Field>
      <fieldset className="field">
        <legend>Mode</legend>
        <label className="choice"><input type="radio" name="mode" value="nat" checked={mode === "nat"} onChange={() => setMode("nat")} /> NAT <span className="muted small">reaches outside through the host</span></label>
        <label className="choice"><input type="radio" name="mode" value="isolated" checked={mode === "isolated"} onChange={() => setMode("isolated")} /> Isolated <span className="muted small">instances only see each other</span></label>
      </fieldset>
      <ErrorBox error={error} />
      <div className="form-actions"><button type="submit" className="primary" disabled={busy}>{busy ? "Creating…" : "Create network"}</button></div>
    </form>
  );
}

function Allocations({ net }: { net: Network }) {
  const list = useResource<Page<Instance>>("/instances?limit=1000", ["instance."]);
  const rows = (list.data?.items ?? []).flatMap((i) =>
    (i.nics.length ? i.nics : i.network ? [{ network: i.network, network_id: "", ip: i.ip ?? "", mac: i.mac ?? "" }] : [])
      .filter((n) => n.network_id === net.id || n.network === net.name)
      .map((n) => ({ instance: i, ip: n.ip, mac: n.mac })),
  );
  const key = (ip: string) => ip.split(".").reduce((a, b) => a * 256 + Number(b), 0);
  rows.sort((a, b) => key(a.ip) - key(b.ip));
  return (
    <section className="panel" aria-labelledby="alloc-h">
      <h2 id="alloc-h">Addresses of {net.name}</h2>
      <ErrorBox error={list.error} />
      <dl className="props">
        <dt>Gateway</dt><dd className="mono">{net.gateway}</dd>
        <dt>Bridge</dt><dd className="mono">{net.bridge}</dd>
      </dl>
      {list.loading && !list.data ? <Loading /> : rows.length === 0 ? <Empty>No instance holds an address here.</Empty> : (
        <div className="table-wrap">
          <table aria-label={`Allocations of ${net.name}`}>
            <thead><tr><th>Address</th><th>Instance</th><th>Kind</th><th className="hide-narrow">MAC</th><th>State</th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={`${r.instance.id}-${r.ip}`}>
                  <td className="mono">{r.ip || "–"}</td>
                  <td>{r.instance.kind === "vm" ? <Link to={`/vms/${q(r.instance.name)}`}>{r.instance.name}</Link> : r.instance.name}</td>
                  <td>{r.instance.kind}</td>
                  <td className="mono hide-narrow">{r.mac || "–"}</td>
                  <td><StateBadge state={r.instance.state} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

export default function NetworkList() {
  const { can } = useSession();
  const [creating, setCreating] = useState(false);
  const [selected, setSelected] = useState<string | null>(null);
  const [failed, setFailed] = useState<unknown>(null);
  const list = useResource<Network[]>("/networks", ["network.", "operation.", "instance."]);
  const nets = list.data ?? [];
  const chosen = nets.find((n) => n.id === selected);
  return (
    <>
      <PageHeader title="Networks">
        {can("network:create") && <button type="button" className="primary" onClick={() => setCreating(true)}>New network</button>}
      </PageHeader>
      <ErrorBox error={list.error} />
      <ErrorBox error={failed} />
      {list.loading && !list.data ? <Loading /> : nets.length === 0 ? <Empty>No networks.</Empty> : (
        <div className="table-wrap">
          <table aria-label="Networks">
            <thead><tr><th>Name</th><th>CIDR</th><th>Mode</th><th className="hide-narrow">Gateway</th><th>Addresses</th><th className="hide-narrow">Status</th><th>Actions</th></tr></thead>
            <tbody>
              {nets.map((n) => {
                const pct = n.addresses_total ? (100 * n.addresses_used) / n.addresses_total : 0;
                return (
                  <tr key={n.id} data-network={n.name} aria-selected={n.id === selected}>
                    <td>
                      <button type="button" className="link" aria-expanded={n.id === selected} onClick={() => setSelected(n.id === selected ? null : n.id)}>{n.name}</button>
                    </td>
                    <td className="mono">{n.cidr}</td>
                    <td>{n.mode}</td>
                    <td className="mono hide-narrow">{n.gateway}</td>
                    <td>
                      <div className="usage" title={`${n.addresses_used} of ${n.addresses_total} addresses in use`}>
                        <div className="progress" role="meter" aria-valuenow={n.addresses_used} aria-valuemin={0} aria-valuemax={n.addresses_total} aria-label={`${n.name} addresses used`}>
                          <div style={{ width: `${pct}%` }} />
                        </div>
                        <span className="small">{n.addresses_used} / {n.addresses_total}</span>
                      </div>
                    </td>
                    <td className="hide-narrow"><StateBadge state={n.status} /></td>
                    <td>
                      <div className="row-actions">
                        {can("network:delete") && (
                          <ActionButton className="danger" confirm={`Delete network ${n.name}?`} onClick={async () => {
                            setFailed(null);
                            try {
                              await finished(`/networks/${q(n.id)}`, undefined, "del");
                            } catch (err) {
                              setFailed(err); // shown above the table: a cell is too narrow
                              return;
                            }
                            if (selected === n.id) setSelected(null);
                            await list.reload();
                          }}>Delete</ActionButton>
                        )}
                      </div>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {chosen && <Allocations net={chosen} />}
      <Modal title="New network" open={creating} onClose={() => setCreating(false)}>
        <CreateNetwork onDone={() => {
          setCreating(false);
          void list.reload();
        }} />
      </Modal>
    </>
  );
}
