// The small helpers the container pages share, and the shapes only they read.
import type { Instance, Port } from "../../api/types";

export type { Port } from "../../api/types";
export type Container = Instance;

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
