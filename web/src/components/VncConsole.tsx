// The VM's screen through noVNC, reached with a one-time console ticket. Loaded lazily.
import { useEffect, useRef, useState } from "react";
import RFB from "@novnc/novnc";
import { api, q, wsUrl } from "../api/client";
import type { Ticket } from "../api/types";
import { ActionButton, ErrorBox } from "./ui";

export default function VncConsole({ vm }: { vm: string }) {
  const screen = useRef<HTMLDivElement>(null);
  const rfb = useRef<RFB | null>(null);
  const [status, setStatus] = useState("connecting…");
  const [paste, setPaste] = useState("");
  const [attempt, setAttempt] = useState(0);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let cancelled = false;
    setStatus("connecting…");
    api
      .post<Ticket>(`/instances/${q(vm)}/console/ticket`, { console: "vnc" })
      .then((ticket) => {
        if (cancelled || !screen.current) return;
        // The ticket travels as a subprotocol, not in the URL: access logs never see it.
        const url = wsUrl(ticket.path.replace(/^\/api\/v1/, ""));
        const client = new RFB(screen.current, url, { wsProtocols: ["binary", `ticket.${ticket.ticket}`] });
        client.scaleViewport = true;
        client.resizeSession = false;
        client.addEventListener("connect", () => setStatus("connected"));
        client.addEventListener("disconnect", (e) => setStatus((e as CustomEvent<{ clean: boolean }>).detail.clean ? "disconnected" : "connection lost"));
        rfb.current = client;
      })
      .catch((err) => {
        setError(err);
        setStatus("failed");
      });
    return () => {
      cancelled = true;
      rfb.current?.disconnect();
      rfb.current = null;
    };
  }, [vm, attempt]);

  return (
    <div>
      <div className="toolbar">
        <span className="muted" aria-live="polite">Screen: <span data-testid="vnc-status">{status}</span></span>
        <button type="button" onClick={() => rfb.current?.sendCtrlAltDel()} disabled={status !== "connected"}>Ctrl+Alt+Del</button>
        <button type="button" onClick={() => setAttempt(attempt + 1)}>Reconnect</button>
      </div>
      <ErrorBox error={error} />
      <div className="vnc-screen" ref={screen} aria-label="VM screen" />
      <form className="toolbar" onSubmit={(e) => e.preventDefault()} aria-label="Paste as keys">
        <input value={paste} onChange={(e) => setPaste(e.target.value)} placeholder="Text to type into the VM (US layout, Enter with \n)" aria-label="Text to type" />
        <ActionButton disabled={!paste} onClick={async () => {
          await api.post(`/instances/${q(vm)}/console/type`, { text: paste.replace(/\\n/g, "\n") });
          setPaste("");
        }}>Type it</ActionButton>
      </form>
    </div>
  );
}
