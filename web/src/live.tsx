// The events websocket: one connection per workspace, reconnected with backoff. Pages
// subscribe to the event types they show; notifications come from operation events.
import { createContext, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { wsUrl } from "./api/client";
import type { CloudEvent, Operation } from "./api/types";
import { opLabel } from "./format";

type Listener = (event: CloudEvent) => void;

/** Sent to listeners when the events websocket is back after a break. */
export const RECONNECTED = "live.reconnected";

export interface Toast { id: number; kind: "ok" | "error" | "info"; text: string }

interface LiveValue {
  connected: boolean;
  subscribe: (fn: Listener) => () => void;
  toasts: Toast[];
  notify: (kind: Toast["kind"], text: string) => void;
  dismiss: (id: number) => void;
}

const LiveContext = createContext<LiveValue | null>(null);
let nextToast = 1;

export function LiveProvider({ workspace, children }: { workspace: string; children: ReactNode }) {
  const listeners = useRef(new Set<Listener>());
  const [connected, setConnected] = useState(false);
  const [toasts, setToasts] = useState<Toast[]>([]);

  const notify = (kind: Toast["kind"], text: string) => {
    const id = nextToast++;
    setToasts((all) => [...all.slice(-4), { id, kind, text }]);
    setTimeout(() => setToasts((all) => all.filter((t) => t.id !== id)), kind === "error" ? 12000 : 6000);
  };

  useEffect(() => {
    let socket: WebSocket | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let ping: ReturnType<typeof setInterval> | undefined;
    let delay = 500;
    let closed = false;
    let opened = false;
    const open = () => {
      socket = new WebSocket(wsUrl("/events"));
      socket.onopen = () => {
        delay = 500;
        setConnected(true);
        if (opened) {
          // Events sent while the socket was down are lost: pages read their data again.
          const event: CloudEvent = { type: RECONNECTED, workspace_id: workspace, time: new Date().toISOString(), data: {} };
          for (const fn of listeners.current) fn(event);
        }
        opened = true;
        ping = setInterval(() => socket?.readyState === WebSocket.OPEN && socket.send("ping"), 25000);
      };
      socket.onmessage = (msg) => {
        const event = JSON.parse(msg.data as string) as CloudEvent;
        for (const fn of listeners.current) fn(event);
      };
      socket.onclose = () => {
        setConnected(false);
        clearInterval(ping);
        if (!closed) retry = setTimeout(open, (delay = Math.min(delay * 2, 10000)));
      };
    };
    open();
    return () => {
      closed = true;
      clearTimeout(retry);
      clearInterval(ping);
      socket?.close();
    };
  }, [workspace]);

  // Finished operations become notifications, wherever the user is.
  useEffect(() => {
    const seen = new Set<string>();
    const fn: Listener = (event) => {
      if (event.type !== "operation.updated") return;
      const op = event.data as unknown as Operation;
      if (seen.has(op.id) || (op.status !== "succeeded" && op.status !== "failed")) return;
      seen.add(op.id);
      const what = `${opLabel(op.kind)}${op.result?.name ? ` ${op.result.name}` : ""}`;
      if (op.status === "failed") notify("error", `${what} failed: ${op.error?.detail ?? op.error?.code ?? "error"}`);
      else notify("ok", `${what} done`);
    };
    const all = listeners.current;
    all.add(fn);
    return () => void all.delete(fn);
  }, []);

  const value = useMemo<LiveValue>(
    () => ({
      connected,
      toasts,
      notify,
      dismiss: (id) => setToasts((all) => all.filter((t) => t.id !== id)),
      subscribe: (fn) => {
        listeners.current.add(fn);
        return () => void listeners.current.delete(fn);
      },
    }),
    [connected, toasts],
  );
  return <LiveContext.Provider value={value}>{children}</LiveContext.Provider>;
}

export function useLive(): LiveValue {
  const value = useContext(LiveContext);
  if (!value) throw new Error("useLive outside LiveProvider");
  return value;
}

/** Call ``fn`` for each event whose type starts with one of ``prefixes``. */
export function useEvents(prefixes: string[], fn: Listener): void {
  const { subscribe } = useLive();
  const latest = useRef(fn);
  latest.current = fn;
  const key = prefixes.join(",");
  useEffect(() => {
    if (!key) return; // no types: nothing to hear
    return subscribe((e) => key.split(",").some((p) => e.type.startsWith(p)) && latest.current(e));
  }, [subscribe, key]);
}
