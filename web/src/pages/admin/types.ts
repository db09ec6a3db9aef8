// The admin API's shapes (cloudlet/api/routers/auth.py, workspaces.py).

export interface User { id: string; username: string; display_name: string | null; is_admin: boolean; disabled: boolean; created_at: string }
export interface Member { user_id: string; username: string; role: string; since: string }
export interface Role { id: string; name: string; builtin: boolean; permissions: string[] }
export interface Token {
  id: string; name: string; prefix: string; workspace_id: string | null; role: string; created_at: string;
  expires_at: string | null; last_used_at: string | null; revoked_at: string | null;
}
export interface TokenCreated extends Token { token: string }
export interface AuditEntry {
  id: string; at: string; workspace_id: string | null; user_id: string | null; principal: string;
  token_id: string | null; action: string; method: string; path: string; target: string | null;
  source: string | null; status: number; result: string;
}

export const RESOURCES = ["instance", "network", "image", "pool", "member"];
export const VERBS = ["view", "create", "edit", "delete"];
