// Who is signed in and in which workspace. A browser session lives in HttpOnly cookies the
// page never sees; the page only learns "signed in" by asking /auth/me.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, ApiError, currentWorkspace, renewSession, scheduleRenewal, setWorkspace, whenSignedOut } from "./api/client";
import type { Me } from "./api/types";

interface SessionValue {
  me: Me | null;
  loading: boolean;
  signIn: (username: string, password: string) => Promise<void>;
  signOut: () => Promise<void>;
  switchWorkspace: (id: string) => Promise<void>;
  can: (permission: string) => boolean;
  refresh: () => Promise<void>;
}

const SessionContext = createContext<SessionValue | null>(null);

export function SessionProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [loading, setLoading] = useState(true);

  const refresh = useCallback(async () => {
    try {
      // Asked first, so a signed-out visit makes no request that fails with a 401.
      const state = await api.get<{ active: boolean; refreshable: boolean }>("/auth/session");
      // A renewal also tells when the session expires, so the next one can be scheduled.
      if (!(state.refreshable ? await renewSession() : state.active)) {
        setMe(null);
        return;
      }
      const who = await api.get<Me>("/auth/me");
      setWorkspace(who.workspace_id);
      setMe(who);
    } catch (err) {
      if (err instanceof ApiError && err.code === "workspace_not_found" && currentWorkspace()) {
        setWorkspace(null); // the remembered workspace is gone or not ours: use the default
        return refresh();
      }
      setMe(null);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    whenSignedOut(() => setMe(null));
    void refresh();
  }, [refresh]);

  const value = useMemo<SessionValue>(
    () => ({
      me,
      loading,
      refresh,
      signIn: async (username, password) => {
        const session = await api.post<{ expires_in: number }>("/auth/session", { username, password });
        scheduleRenewal(session.expires_in);
        await refresh();
      },
      signOut: async () => {
        try {
          await api.del("/auth/session");
        } finally {
          scheduleRenewal(null);
          setMe(null);
        }
      },
      switchWorkspace: async (id) => {
        setWorkspace(id);
        await refresh();
      },
      can: (permission) => !!me && (me.is_admin || me.permissions.includes(permission)),
    }),
    [me, loading, refresh],
  );
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error("useSession outside SessionProvider");
  return value;
}
