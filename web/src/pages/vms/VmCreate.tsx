// The create wizard: image, size, network, access (SSH keys, a guest user, user-data), review.
import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router-dom";
import { api, q } from "../../api/client";
import type { Image, Network, Operation } from "../../api/types";
import { ErrorBox, Field, PageHeader } from "../../components/ui";
import { useAction, useResource } from "../../hooks";

const STEPS = ["Image", "Size", "Network", "Access", "Review"] as const;
const SIZES: [string, number, number][] = [["small", 1, 256], ["medium", 2, 1024], ["large", 4, 4096]];

interface Draft {
  name: string; image: string; cpus: number; memory: number; disk: number; network: string; ip: string;
  staticIp: boolean; sshKeys: string; user: string; password: string; sudo: boolean; userData: string;
}

function requestFor(d: Draft): Record<string, unknown> {
  const body: Record<string, unknown> = {
    name: d.name.trim(), image: d.image, cpus: d.cpus, memory: d.memory, disk: d.disk,
    ssh_keys: d.sshKeys.split("\n").map((k) => k.trim()).filter(Boolean),
  };
  if (d.network) body.network = d.network;
  if (d.ip.trim()) {
    body.ip = d.ip.trim();
    body.static_ip = d.staticIp;
  }
  if (d.user.trim()) body.users = [{ name: d.user.trim(), password: d.password || null, sudo: d.sudo }];
  if (d.userData.trim()) body.user_data = d.userData;
  return body;
}

export default function VmCreate() {
  const navigate = useNavigate();
  const images = useResource<Image[]>("/images", ["operation."]);
  const networks = useResource<Network[]>("/networks");
  const [step, setStep] = useState(0);
  const { busy, error, setError, run } = useAction();
  const [d, setD] = useState<Draft>({
    name: "", image: "", cpus: 1, memory: 256, disk: 2, network: "", ip: "", staticIp: false,
    sshKeys: "", user: "", password: "", sudo: true, userData: "",
  });
  const set = <K extends keyof Draft>(key: K, value: Draft[K]) => setD((old) => ({ ...old, [key]: value }));
  const ready = (images.data ?? []).filter((i) => i.status === "ready");
  const image = ready.find((i) => i.name === d.image);
  const minDisk = Math.max(1, image?.min_disk ?? 0, image?.virtual_size ? Math.ceil(image.virtual_size / 2 ** 30) : 1);

  const next = (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    if (step < STEPS.length - 1) setStep(step + 1);
    else void create();
  };

  const create = () =>
    run(async () => {
      const op = await api.post<Operation>("/instances", requestFor(d));
      navigate(`/vms/${q(d.name.trim())}`, { state: { operation: op.id } });
    });

  return (
    <>
      <PageHeader title="New virtual machine" />
      <ol className="steps" aria-label="Steps">
        {STEPS.map((s, i) => (
          <li key={s} aria-current={i === step ? "step" : undefined}>{i + 1}. {s}</li>
        ))}
      </ol>
      <form className="panel" onSubmit={next} aria-label={`Step ${step + 1}: ${STEPS[step]}`}>
        {step === 0 && (
          <>
            <Field label="Name" hint="Up to 63 characters, no '/', e.g. web1, my_vm or Test.VM. The guest's hostname is made from it (my_vm → my-vm).">
              <input name="name" required maxLength={63} pattern={"[^\\s\\/](?:[^\\/]{0,61}[^\\s\\/])?"} value={d.name} onChange={(e) => set("name", e.target.value)} autoFocus />
            </Field>
            <fieldset className="field">
              <legend>Image</legend>
              {ready.length === 0 && <p className="muted">No ready images. Import one on the Images page.</p>}
              {ready.map((img) => (
                <label key={img.id} className="choice">
                  <input type="radio" name="image" value={img.name} required checked={d.image === img.name} onChange={() => {
                    set("image", img.name);
                    if (img.min_memory && d.memory < img.min_memory) set("memory", img.min_memory);
                    if (img.format === "iso" && d.disk < 10) set("disk", 10);
                  }} />
                  <span>{img.name}</span>
                  <span className="muted small">{img.format === "iso" ? "installer ISO" : img.os ?? img.format} {img.min_memory ? `· ≥ ${img.min_memory} MiB` : ""}</span>
                </label>
              ))}
            </fieldset>
          </>
        )}
        {step === 1 && (
          <>
            <div className="toolbar" role="group" aria-label="Presets">
              {SIZES.map(([label, cpus, memory]) => (
                <button type="button" key={label} onClick={() => setD({ ...d, cpus, memory })}>{label}: {cpus} vCPU, {memory} MiB</button>
              ))}
            </div>
            <div className="grid-2">
              <Field label="vCPUs"><input name="cpus" type="number" min={1} max={64} required value={d.cpus} onChange={(e) => set("cpus", Number(e.target.value))} /></Field>
              <Field label="Memory (MiB)" hint={image?.min_memory ? `The image needs at least ${image.min_memory} MiB.` : undefined}>
                <input name="memory" type="number" min={image?.min_memory ?? 64} step={64} required value={d.memory} onChange={(e) => set("memory", Number(e.target.value))} />
              </Field>
              <Field label="Disk (GB)" hint={`At least ${minDisk} GB for this image.`}>
                <input name="disk" type="number" min={minDisk} max={4096} required value={d.disk} onChange={(e) => set("disk", Number(e.target.value))} />
              </Field>
            </div>
          </>
        )}
        {step === 2 && (
          <>
            <Field label="Network">
              <select name="network" value={d.network} onChange={(e) => set("network", e.target.value)}>
                <option value="">default</option>
                {(networks.data ?? []).map((n) => (
                  <option key={n.id} value={n.name}>{n.name} ({n.cidr}, {n.addresses_total - n.addresses_used} free)</option>
                ))}
              </select>
            </Field>
            <Field label="Address (optional)" hint="Leave empty for the next free address.">
              <input name="ip" value={d.ip} placeholder="e.g. 10.0.0.20" onChange={(e) => set("ip", e.target.value)} />
            </Field>
            <label className="choice"><input type="checkbox" checked={d.staticIp} onChange={(e) => set("staticIp", e.target.checked)} disabled={!d.ip} /> Configure the address statically in the guest (no DHCP)</label>
          </>
        )}
        {step === 3 && (
          <>
            <Field label="SSH public keys" hint="One per line.">
              <textarea name="ssh_keys" value={d.sshKeys} placeholder="ssh-ed25519 AAAA… you@laptop" onChange={(e) => set("sshKeys", e.target.value)} />
            </Field>
            <div className="grid-2">
              <Field label="Guest user (optional)"><input name="user" value={d.user} autoComplete="off" onChange={(e) => set("user", e.target.value)} /></Field>
              <Field label="Password" hint="Hashed by the server, never stored."><input name="password" type="password" autoComplete="new-password" value={d.password} disabled={!d.user} onChange={(e) => set("password", e.target.value)} /></Field>
            </div>
            <label className="choice"><input type="checkbox" checked={d.sudo} disabled={!d.user} onChange={(e) => set("sudo", e.target.checked)} /> Allow sudo</label>
            <Field label="User-data (optional)" hint="A #cloud-config (merged with the above) or a #! script.">
              <textarea name="user_data" rows={8} value={d.userData} placeholder={"#cloud-config\nruncmd:\n  - echo hello > /tmp/hello"} onChange={(e) => set("userData", e.target.value)} />
            </Field>
          </>
        )}
        {step === 4 && (
          <dl className="props" aria-label="Review">
            <dt>Name</dt><dd>{d.name}</dd>
            <dt>Image</dt><dd>{d.image}</dd>
            <dt>Size</dt><dd>{d.cpus} vCPU · {d.memory} MiB · {d.disk} GB</dd>
            <dt>Network</dt><dd>{d.network || "default"} {d.ip && `· ${d.ip}${d.staticIp ? " (static)" : ""}`}</dd>
            <dt>SSH keys</dt><dd>{d.sshKeys.split("\n").filter((k) => k.trim()).length}</dd>
            <dt>Guest user</dt><dd>{d.user || "–"}</dd>
            <dt>User-data</dt><dd>{d.userData.trim() ? `${d.userData.split("\n").length} lines` : "–"}</dd>
          </dl>
        )}
        <ErrorBox error={error} />
        <div className="form-actions">
          {step > 0 && <button type="button" onClick={() => setStep(step - 1)}>Back</button>}
          <button type="submit" className="primary" disabled={busy}>{step === STEPS.length - 1 ? (busy ? "Creating…" : "Create") : "Next"}</button>
        </div>
      </form>
    </>
  );
}
