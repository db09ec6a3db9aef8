// The pool API's shapes (cloudlet/api/routers/pools.py), as far as the pool pages read them.

export interface PoolVm {
  instance_id: string; name: string | null; ip: string | null;
  status: string; holder: string | null; lease_expires_at: string | null;
}
export interface Pool {
  id: string; name: string; template: Record<string, unknown>; min_ready: number; max_size: number;
  lease_default: number; lease_max: number; on_checkin: string; idle_timeout: number | null;
  legacy_api: boolean; counts: Record<string, number>; vms: PoolVm[]; created_at: string;
}
export interface Checkout { id: string; name: string; ip: string | null; ssh_user: string; lease_expires_at: string }
export interface Lease {
  pool_id: string; instance_id: string; instance_name: string; ip: string | null; holder: string;
  started_at: string; expires_at: string; ended_at: string | null; end_reason: string | null;
}

export const POOL_EVENTS = ["pool.", "instance.", "operation."];

/** "1h 30m", "45 min", "90 s" for a number of seconds. */
export function duration(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 3600) return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
