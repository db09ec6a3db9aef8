// The container shapes as the API returns them (api/types.ts has an older PortMapping), and the
// small helpers the container pages share.
import type { Instance } from "../../api/types";

export interface Port { host: number; container: number; protocol: "tcp" | "udp"; host_ip: string }
export interface Volume { path: string; name: string | null; host_path: string | null; read_only: boolean }
export interface ContainerSpec {
  image: string; short_id: string | null; command: string[] | null; entrypoint: string[] | null;
  env: Record<string, string>; ports: Port[]; volumes: Volume[]; cpus: number | null; memory: number | null;
  restart: string; privileged: boolean; workdir: string | null; user: string | null; status: string | null;
  exit_code: number | null; started_at: string | null; finished_at: string | null;
}
export type Container = Omit<Instance, "container"> & { container: ContainerSpec | null };

export interface ContainerImage { id: string; short_id: string; tags: string[]; size: number; created: string; in_use: number }
export interface RegistryImage { name: string; description: string; stars: number; official: boolean }

/** The actions that make sense in a container's state, as [action, label]. */
export function containerActions(c: Container): [string, string][] {
  switch (c.state) {
    case "running": return [["stop", "Stop"], ["restart", "Restart"], ["pause", "Pause"], ["kill", "Kill"]];
    case "paused": return [["resume", "Resume"], ["kill", "Kill"]];
    case "stopped": case "exited": case "created": case "error": return [["start", "Start"]];
    case "stopping": return [["kill", "Kill"]];
    default: return [];
  }
}

export function portText(p: Port): string {
  return `${p.host_ip ? `${p.host_ip}:` : ""}${p.host} → ${p.container}/${p.protocol}`;
}

/** Split a command line as a shell would for simple cases: spaces separate, quotes group. */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(line))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : (m[2] ?? m[3]));
  return out;
}
