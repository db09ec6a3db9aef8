// The shapes the REST API returns (see /openapi.json), as far as the dashboard reads them.

export interface Membership { workspace_id: string; workspace: string; role: string }
export interface Me {
  id: string; username: string; display_name: string | null; is_admin: boolean;
  workspace_id: string; role: string; permissions: string[]; workspaces: Membership[];
}
export interface Nic { network: string; network_id: string; ip: string; mac: string }
export interface Port { host: number; container: number; protocol: "tcp" | "udp"; host_ip: string }
export interface ContainerVolume { path: string; name: string | null; host_path: string | null; read_only: boolean }
export interface ContainerSpec {
  image: string; short_id: string | null; command: string[] | null; entrypoint: string[] | null;
  env: Record<string, string | null>; ports: Port[]; volumes: ContainerVolume[]; cpus: number | null; memory: number | null;
  restart: string; privileged: boolean; workdir: string | null; user: string | null; status: string | null;
  exit_code: number | null; started_at: string | null; finished_at: string | null;
}
export interface Instance {
  id: string; name: string; kind: "vm" | "container"; state: string; cpus: number; memory: number;
  disk: number; hostname: string; image: string | null; network: string | null; ip: string | null;
  mac: string | null; nics: Nic[]; host: string; error: string | null; container: ContainerSpec | null;
  created_at: string; updated_at: string;
}
export interface Page<T> { items: T[]; total: number; limit: number; offset: number }
export interface Image {
  id: string; name: string; status: string; format: string | null; virtual_size: number | null;
  file_size: number | null; sha256: string | null; source: string | null; public: boolean;
  os: string | null; min_disk: number | null; min_memory: number | null; created_at: string; kind: string;
}
export interface Network {
  id: string; name: string; cidr: string; mode: string; gateway: string; bridge: string; status: string;
  addresses_total: number; addresses_used: number; created_at: string;
}
export interface Operation {
  id: string; kind: string; target_type: string; target_id: string | null; status: string;
  progress: number; message: string | null; error: { code?: string; detail?: string; status?: number } | null;
  result: Record<string, unknown> | null; created_at: string; started_at: string | null; finished_at: string | null;
}
export interface Snapshot {
  id: string; name: string; description: string | null; with_memory: boolean; status: string; created_at: string;
  cpus: number | null; memory: number | null; disk: number | null;
}
export interface DriverInfo { name: string; version: string | null; ok: boolean; error: string | null; details: Record<string, unknown> }
export interface ServerInfo { version: string; drivers: DriverInfo[]; host: Record<string, unknown> | null }
export interface Workspace { id: string; name: string; role: string; created_at: string }
export interface Quota { limits: Record<string, number | null>; usage: Record<string, number> }
export interface CloudEvent { type: string; workspace_id: string; time: string; data: Record<string, unknown> }
export interface Stats {
  cpu_percent: number; online_cpus: number; memory_bytes: number; memory_limit_bytes: number;
  memory_percent: number; network_rx_bytes: number; network_tx_bytes: number;
  block_read_bytes: number; block_write_bytes: number; pids: number; read_at: string;
}
export interface Ticket { ticket: string; console: string; expires_at: string; path: string }
export interface Volume {
  id: string; name: string; size: number; allocation: number | null; pool: string; pool_id: string;
  status: string; attached_to: string | null; attached_to_id: string | null; target: string | null;
  serial: string; created_at: string;
}
