import type { Instance } from "../../api/types";

/** The power actions that make sense in a VM's state, as [action, label]. */
export function vmActions(vm: Instance): [string, string][] {
  switch (vm.state) {
    case "running": return [["stop", "Stop"], ["reboot", "Reboot"], ["pause", "Pause"]];
    case "paused": return [["resume", "Resume"], ["force-stop", "Force stop"]];
    case "stopped": case "error": return [["start", "Start"]];
    case "stopping": return [["force-stop", "Force stop"]];
    default: return [];
  }
}
