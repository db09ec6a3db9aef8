// An xterm.js terminal bridged to a websocket of raw bytes (serial consoles, exec sessions).
// Loaded lazily: xterm is only fetched when a terminal opens.
import { useEffect, useRef, useState } from "react";
import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";

export interface TerminalProps {
  url: string;
  /** Encode what the user types; the default sends text frames as they are. */
  encode?: (data: string) => string;
  /** A message telling the far end the terminal's size, if it cares. */
  resizeMessage?: (cols: number, rows: number) => string | null;
  label: string;
}

/** The exec session's last message, `{"type": "exit", "code": N}`: N, else null. */
function exitCode(text: string): number | null {
  if (!text.startsWith("{")) return null;
  try {
    const msg = JSON.parse(text) as { type?: string; code?: number | null };
    return msg.type === "exit" ? (msg.code ?? -1) : null;
  } catch {
    return null;
  }
}

export default function Terminal({ url, encode, resizeMessage, label }: TerminalProps) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState("connecting…");

  useEffect(() => {
    const term = new XTerm({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current!);
    fit.fit();
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    const sendSize = () => {
      const msg = resizeMessage?.(term.cols, term.rows);
      if (msg && socket.readyState === WebSocket.OPEN) socket.send(msg);
    };
    socket.onopen = () => {
      setStatus("connected");
      sendSize();
      term.focus();
    };
    socket.onmessage = (e) => {
      if (typeof e.data !== "string") return term.write(new Uint8Array(e.data as ArrayBuffer));
      const exit = exitCode(e.data);
      if (exit === null) term.write(e.data);
      else term.write(`\r\n\x1b[2m[exited with code ${exit}]\x1b[0m\r\n`);
    };
    socket.onclose = (e) => setStatus(`disconnected${e.reason ? `: ${e.reason}` : ""}`);
    const input = term.onData((data) => socket.readyState === WebSocket.OPEN && socket.send(encode ? encode(data) : data));
    const observer = new ResizeObserver(() => {
      fit.fit();
      sendSize();
    });
    observer.observe(host.current!);
    return () => {
      observer.disconnect();
      input.dispose();
      socket.close();
      term.dispose();
    };
  }, [url, encode, resizeMessage]);

  return (
    <div>
      <p className="muted small" aria-live="polite">{label}: <span data-testid="terminal-status">{status}</span></p>
      <div className="terminal" ref={host} role="application" aria-label={label} />
    </div>
  );
}
