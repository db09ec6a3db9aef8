// The "Run container" dialog: an image from the local ones, a name, command, environment, ports
// and a restart policy. POST /instances with kind "container".
import { useState, type FormEvent } from "react";
import { Link } from "react-router-dom";
import { api } from "../../api/client";
import type { Network } from "../../api/types";
import { ErrorBox, Field } from "../../components/ui";
import { useAction, useResource } from "../../hooks";
import { splitCommand, type ContainerImage, type Port } from "./model";

interface PortRow { host: string; container: string; protocol: "tcp" | "udp" }

/** KEY=VALUE lines to an object; an error names the first bad line. */
export function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`Environment line ${i + 1} is not KEY=VALUE: ${line}`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1);
  });
  return env;
}

function ports(rows: PortRow[]): Port[] {
  return rows
    .filter((r) => r.host.trim() || r.container.trim())
    .map((r, i) => {
      const host = Number(r.host);
      const container = Number(r.container);
      const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
      if (!ok(host) || !ok(container)) throw new Error(`Port mapping ${i + 1}: ports are numbers from 1 to 65535`);
      return { host, container, protocol: r.protocol, host_ip: "" };
    });
}

export function RunContainer({ onCreated, initialImage }: { onCreated: (name: string) => void; initialImage?: string }) {
  const images = useResource<ContainerImage[]>("/container-images", ["operation."]);
  const networks = useResource<Network[]>("/networks");
  const tags = (images.data ?? []).flatMap((i) => i.tags);
  const [name, setName] = useState("");
  const [image, setImage] = useState(initialImage ?? "");
  const [command, setCommand] = useState("");
  const [env, setEnv] = useState("");
  const [rows, setRows] = useState<PortRow[]>([]);
  const [restart, setRestart] = useState("no");
  const [network, setNetwork] = useState("default");
  const [memory, setMemory] = useState("");
  const { busy, error, run } = useAction();
  const chosen = image || tags[0] || "";

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    await run(async () => {
      const body: Record<string, unknown> = {
        kind: "container", name: name.trim(), image: chosen, env: parseEnv(env), ports: ports(rows), restart, network,
      };
      if (command.trim()) body.command = splitCommand(command);
      if (memory.trim()) body.memory = Number(memory);
      await api.post("/instances", body);
      onCreated(name.trim());
    });
  };
  const setRow = (i: number, patch: Partial<PortRow>) => setRows(rows.map((r, j) => (j === i ? { ...r, ...patch } : r)));

  return (
    <form onSubmit={submit} aria-label="Run container">
      <ErrorBox error={images.error} />
      {images.data && tags.length === 0 && (
        <p className="muted">No local images yet: build one from a <Link to="/projects">Dockerfile</Link> or pull one on the <Link to="/images?kind=container">images page</Link>.</p>
      )}
      <div className="grid-2">
        <Field label="Name" hint="Lowercase letters, digits and dashes.">
          <input name="name" required value={name} pattern={"[a-z0-9](?:[a-z0-9\\-]*[a-z0-9])?"} autoComplete="off" onChange={(e) => setName(e.target.value)} autoFocus />
        </Field>
        <Field label="Image">
          <select name="image" required value={chosen} onChange={(e) => setImage(e.target.value)}>
            {tags.length === 0 && <option value="">no local images</option>}
            {tags.map((t) => <option key={t} value={t}>{t}</option>)}
          </select>
        </Field>
      </div>
      <Field label="Command (optional)" hint="Replaces the image's CMD; quotes group words.">
        <input name="command" className="mono" value={command} placeholder={'e.g. sh -c "while true; do date; sleep 1; done"'} onChange={(e) => setCommand(e.target.value)} />
      </Field>
      <Field label="Environment (optional)" hint="One KEY=VALUE a line.">
        <textarea name="env" rows={3} value={env} placeholder={"GREETING=hello\nDEBUG=1"} onChange={(e) => setEnv(e.target.value)} />
      </Field>
      <fieldset className="field">
        <legend>Port mappings</legend>
        {rows.map((r, i) => (
          <div className="port-row" key={i}>
            <input aria-label={`Host port ${i + 1}`} inputMode="numeric" placeholder="host" value={r.host} onChange={(e) => setRow(i, { host: e.target.value })} />
            <span aria-hidden="true">→</span>
            <input aria-label={`Container port ${i + 1}`} inputMode="numeric" placeholder="container" value={r.container} onChange={(e) => setRow(i, { container: e.target.value })} />
            <select aria-label={`Protocol ${i + 1}`} value={r.protocol} onChange={(e) => setRow(i, { protocol: e.target.value as "tcp" | "udp" })}>
              <option value="tcp">tcp</option><option value="udp">udp</option>
            </select>
            <button type="button" className="icon" aria-label={`Remove port mapping ${i + 1}`} onClick={() => setRows(rows.filter((_, j) => j !== i))}>×</button>
          </div>
        ))}
        <button type="button" className="port-add" onClick={() => setRows([...rows, { host: "", container: "", protocol: "tcp" }])}>Add port</button>
      </fieldset>
      <div className="grid-2">
        <Field label="Restart policy">
          <select name="restart" value={restart} onChange={(e) => setRestart(e.target.value)}>
            <option value="no">no</option>
            <option value="on-failure">on-failure</option>
            <option value="always">always</option>
            <option value="unless-stopped">unless-stopped</option>
          </select>
        </Field>
        <Field label="Network">
          <select name="network" value={network} onChange={(e) => setNetwork(e.target.value)}>
            <option value="default">default</option>
            {(networks.data ?? []).filter((n) => n.name !== "default").map((n) => <option key={n.id} value={n.name}>{n.name} ({n.cidr})</option>)}
          </select>
        </Field>
        <Field label="Memory limit (MiB, optional)">
          <input name="memory" type="number" min={6} value={memory} onChange={(e) => setMemory(e.target.value)} />
        </Field>
      </div>
      <ErrorBox error={error} />
      <div className="form-actions">
        <button type="submit" className="primary" disabled={busy || !chosen}>{busy ? "Starting…" : "Run"}</button>
      </div>
    </form>
  );
}
