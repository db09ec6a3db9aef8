import { useCallback, useEffect, useRef, useState } from "react";
import { api } from "./api/client";
import { RECONNECTED, useEvents } from "./live";

export interface Resource<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => Promise<void>;
}

/** GET ``path`` (null: nothing yet) and read it again when events of ``liveOn`` types arrive;
 * a burst of events costs one read. */
export function useResource<T>(path: string | null, liveOn: string[] = []): Resource<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const current = useRef(path);
  current.current = path;

  const reload = useCallback(async () => {
    if (!path) return;
    try {
      const value = await api.get<T>(path);
      if (current.current === path) {
        setData(value);
        setError(null);
      }
    } catch (err) {
      if (current.current === path) setError(err);
    } finally {
      if (current.current === path) setLoading(false);
    }
  }, [path]);

  useEffect(() => {
    setLoading(true);
    void reload();
  }, [reload]);

  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEvents(liveOn.length ? [...liveOn, RECONNECTED] : [], () => {
    clearTimeout(timer.current);
    timer.current = setTimeout(() => void reload(), 150);
  });
  useEffect(() => () => clearTimeout(timer.current), []);
  return { data, error, loading, reload };
}

/** Re-render every ``ms`` (countdowns, "3 min ago"). */
export function useTick(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}

export interface Action {
  busy: boolean;
  error: unknown;
  setError: (error: unknown) => void;
  /** Run ``fn`` marked busy; what it throws is kept in ``error`` (for an ErrorBox). */
  run: (fn: () => Promise<unknown>) => Promise<void>;
}

/** The busy flag and error of a form's or button's async action, in one place. */
export function useAction(): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = useCallback(async (fn: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, setError, run };
}
