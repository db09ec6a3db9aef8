import { useState, type FormEvent } from "react";
import { api } from "../../api/client";
import type { Image, Network } from "../../api/types";
import { ErrorBox, Field } from "../../components/ui";
import { useAction, useResource } from "../../hooks";
import type { Pool } from "./types";

/** The pool form (shown in a dialog): the VM template and the pool's policy. With ``pool``
 * it edits that pool in place (VMs made from then on follow the new template). */
export function PoolForm({ pool, onSaved }: { pool?: Pool; onSaved: (pool: Pool) => void }) {
  const images = useResource<Image[]>("/images");
  const networks = useResource<Network[]>("/networks");
  const { busy, error, run } = useAction();
  const t = (pool?.template ?? {}) as Record<string, unknown>;
  const [f, setF] = useState({
    name: pool?.name ?? "", image: String(t.image ?? ""), cpus: Number(t.cpus ?? 1), memory: Number(t.memory ?? 512),
    disk: Number(t.disk ?? 1), network: String(t.network ?? "default"), sshKeys: ((t.ssh_keys as string[]) ?? []).join("\n"),
    minReady: pool?.min_ready ?? 1, maxSize: pool?.max_size ?? 5, leaseDefault: (pool?.lease_default ?? 3600) / 60,
    leaseMax: (pool?.lease_max ?? 86400) / 60, onCheckin: pool?.on_checkin ?? "reset",
  });
  const set = <K extends keyof typeof f>(key: K, value: (typeof f)[K]) => setF((old) => ({ ...old, [key]: value }));
  const ready = (images.data ?? []).filter((i) => i.status === "ready" && i.format !== "iso");

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const body = {
        name: f.name.trim(),
        template: {
          ...t, // what the form does not show (user-data, SSH user, probe port) stays
          image: f.image || ready[0]?.name, cpus: f.cpus, memory: f.memory, disk: f.disk, network: f.network,
          ssh_keys: f.sshKeys.split("\n").map((k) => k.trim()).filter(Boolean),
        },
        min_ready: f.minReady, max_size: f.maxSize, lease_default: Math.round(f.leaseDefault * 60),
        lease_max: Math.round(f.leaseMax * 60), on_checkin: f.onCheckin,
        idle_timeout: pool?.idle_timeout ?? null, legacy_api: pool?.legacy_api ?? false,
      };
      onSaved(pool ? await api.put<Pool>(`/pools/${pool.id}`, body) : await api.post<Pool>("/pools", body));
    });
  };

  return (
    <form onSubmit={submit} aria-label={pool ? `Edit pool ${pool.name}` : "New pool"}>
      <Field label="Name">
        <input name="name" required pattern="[a-zA-Z0-9][a-zA-Z0-9\-]{0,62}" value={f.name} onChange={(e) => set("name", e.target.value)} autoFocus />
      </Field>
      <fieldset className="field">
        <legend>VM template</legend>
        <div className="grid-2">
          <Field label="Image">
            <select name="image" required value={f.image || ready[0]?.name || ""} onChange={(e) => set("image", e.target.value)}>
              {ready.length === 0 && <option value="">no ready images</option>}
              {ready.map((i) => <option key={i.id} value={i.name}>{i.name}</option>)}
            </select>
          </Field>
          <Field label="Network">
            <select name="network" value={f.network} onChange={(e) => set("network", e.target.value)}>
              {!(networks.data ?? []).some((n) => n.name === "default") && <option value="default">default</option>}
              {(networks.data ?? []).map((n) => <option key={n.id} value={n.name}>{n.name} ({n.cidr})</option>)}
            </select>
          </Field>
          <Field label="vCPUs"><input name="cpus" type="number" min={1} max={64} required value={f.cpus} onChange={(e) => set("cpus", Number(e.target.value))} /></Field>
          <Field label="Memory (MiB)"><input name="memory" type="number" min={64} step={64} required value={f.memory} onChange={(e) => set("memory", Number(e.target.value))} /></Field>
          <Field label="Disk (GB)"><input name="disk" type="number" min={1} required value={f.disk} onChange={(e) => set("disk", Number(e.target.value))} /></Field>
        </div>
        <Field label="SSH public keys" hint="One per line; every VM of the pool gets them.">
          <textarea name="ssh_keys" rows={3} value={f.sshKeys} onChange={(e) => set("sshKeys", e.target.value)} />
        </Field>
      </fieldset>
      <div className="grid-2">
        <Field label="Ready VMs kept (min_ready)"><input name="min_ready" type="number" min={0} required value={f.minReady} onChange={(e) => set("minReady", Number(e.target.value))} /></Field>
        <Field label="Most VMs (max_size)"><input name="max_size" type="number" min={1} required value={f.maxSize} onChange={(e) => set("maxSize", Number(e.target.value))} /></Field>
        <Field label="Default lease (minutes)"><input name="lease_default" type="number" min={1} required value={f.leaseDefault} onChange={(e) => set("leaseDefault", Number(e.target.value))} /></Field>
        <Field label="Longest lease (minutes)"><input name="lease_max" type="number" min={1} required value={f.leaseMax} onChange={(e) => set("leaseMax", Number(e.target.value))} /></Field>
        <Field label="On check-in">
          <select name="on_checkin" value={f.onCheckin} onChange={(e) => set("onCheckin", e.target.value)}>
            <option value="reset">reset (a fresh VM replaces it)</option>
            <option value="reuse">reuse (back to the pool as it is)</option>
            <option value="destroy">destroy</option>
          </select>
        </Field>
      </div>
      <ErrorBox error={error} />
      <div className="form-actions">
        {pool && <p className="muted small">VMs made from now on follow the template; the ones held now keep theirs until they are checked in.</p>}
        <button type="submit" className="primary" disabled={busy}>{busy ? "Saving…" : pool ? "Save" : "Create pool"}</button>
      </div>
    </form>
  );
}
