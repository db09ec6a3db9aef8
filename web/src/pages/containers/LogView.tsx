// A container's log: followed live over a websocket (or read once), kept as an array of lines and
// drawn with a virtualizer so 100k lines scroll as fast as 100. A search box highlights matches
// and steps through them; while following, the view sticks to the end unless scrolled up.
import { useVirtualizer } from "@tanstack/react-virtual";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { api, q, wsUrl } from "../../api/client";
import { ErrorBox } from "../../components/ui";

const MAX_LINES = 200_000;
const TAILS = ["100", "1000", "10000", "100000"];

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function Highlighted({ text, re }: { text: string; re: RegExp | null }) {
  if (!re) return <>{text || " "}</>;
  const parts = text.split(re);
  return <>{parts.map((p, i) => (i % 2 ? <mark key={i}>{p}</mark> : p))}</>;
}

export function LogView({ instance, running }: { instance: string; running: boolean }) {
  const lines = useRef<string[]>([]);
  const partial = useRef("");
  const [count, setCount] = useState(0);
  const [follow, setFollow] = useState(running);
  const [tail, setTail] = useState("1000");
  const [timestamps, setTimestamps] = useState(false);
  const [status, setStatus] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [search, setSearch] = useState("");
  const [onlyMatches, setOnlyMatches] = useState(false);
  const [current, setCurrent] = useState(0);
  const [stick, setStick] = useState(true);
  const scroller = useRef<HTMLDivElement>(null);
  const flushTimer = useRef<ReturnType<typeof setTimeout>>();

  const reset = () => {
    lines.current = [];
    partial.current = "";
    setCount(0);
  };
  const add = useCallback((chunk: string, final = false) => {
    const text = partial.current + chunk;
    const parts = text.split("\n");
    partial.current = final ? "" : parts.pop() ?? "";
    if (final && parts[parts.length - 1] === "") parts.pop();
    const all = lines.current;
    for (const p of parts) all.push(p.endsWith("\r") ? p.slice(0, -1) : p);
    if (all.length > MAX_LINES) all.splice(0, all.length - MAX_LINES);
    // One render per burst, however many frames arrived.
    flushTimer.current ??= setTimeout(() => {
      flushTimer.current = undefined;
      setCount(lines.current.length);
    }, 50);
  }, []);

  useEffect(() => {
    reset();
    setError(null);
    if (follow) {
      const socket = new WebSocket(wsUrl(`/instances/${q(instance)}/logs/ws`, { tail, timestamps: String(timestamps) }));
      setStatus("connecting…");
      socket.onopen = () => setStatus("following");
      socket.onmessage = (e) => add(e.data as string);
      socket.onclose = (e) => {
        if (partial.current) add("", true);
        setStatus(e.code === 1000 ? "the container stopped" : e.reason ? `closed: ${e.reason}` : "closed");
      };
      return () => {
        socket.onclose = null;
        socket.close();
      };
    }
    let stop = false;
    setStatus("loading…");
    api.get<string>(`/instances/${q(instance)}/logs?tail=${tail}&timestamps=${timestamps}`).then(
      (text) => {
        if (stop) return;
        add(text, true);
        setStatus("");
      },
      (err) => !stop && (setError(err), setStatus("")),
    );
    return () => {
      stop = true;
    };
  }, [instance, follow, tail, timestamps, add]);
  useEffect(() => () => clearTimeout(flushTimer.current), []);

  const re = useMemo(() => (search ? new RegExp(`(${escapeRe(search)})`, "gi") : null), [search]);
  const needle = search.toLowerCase();
  // Indexes of the lines that match (count is a dependency: the array grows in place).
  const matches = useMemo(() => {
    if (!needle) return [] as number[];
    const out: number[] = [];
    lines.current.forEach((l, i) => l.toLowerCase().includes(needle) && out.push(i));
    return out;
  }, [needle, count]); // eslint-disable-line react-hooks/exhaustive-deps
  const rows = onlyMatches && needle ? matches : null;
  const total = rows ? rows.length : count;

  const virtual = useVirtualizer({ count: total, getScrollElement: () => scroller.current, estimateSize: () => 19, overscan: 30 });

  useEffect(() => {
    if (stick && total > 0) virtual.scrollToIndex(total - 1, { align: "end" });
  }, [total, stick, virtual]);

  const goTo = (n: number) => {
    if (!matches.length) return;
    const i = (n + matches.length) % matches.length;
    setCurrent(i);
    setStick(false);
    virtual.scrollToIndex(rows ? i : matches[i], { align: "center" });
  };
  // A new search term shows its first match (as find in a page does).
  const first = matches[0];
  useEffect(() => {
    if (!needle || first === undefined) return;
    setStick(false);
    virtual.scrollToIndex(onlyMatches ? 0 : first, { align: "center" });
    // Only when the term changes, not as more lines arrive.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [needle, first === undefined]);
  // Following sticks to the end until the user scrolls up; reaching the end sticks again. (Lines
  // arriving grow the content under a scroll event, so only a move upwards unsticks.)
  const lastTop = useRef(0);
  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < 30;
    if (atEnd) setStick(true);
    else if (el.scrollTop < lastTop.current - 2) setStick(false);
    lastTop.current = el.scrollTop;
  };
  const currentLine = matches.length ? matches[Math.min(current, matches.length - 1)] : -1;

  return (
    <div className="logs">
      <div className="toolbar">
        <label className="choice"><input type="checkbox" checked={follow} onChange={(e) => setFollow(e.target.checked)} /> Follow</label>
        <label className="choice"><input type="checkbox" checked={timestamps} onChange={(e) => setTimestamps(e.target.checked)} /> Timestamps</label>
        <label className="inline-field">Last
          <select aria-label="Lines to load" value={tail} onChange={(e) => setTail(e.target.value)}>
            {TAILS.map((t) => <option key={t} value={t}>{Number(t).toLocaleString()}</option>)}
          </select>
          lines
        </label>
        <input type="search" aria-label="Search the log" placeholder="Search" value={search}
          onChange={(e) => { setSearch(e.target.value); setCurrent(0); }}
          onKeyDown={(e) => { if (e.key === "Enter") { e.preventDefault(); goTo(current + (e.shiftKey ? -1 : 1)); } }} />
        {needle && (
          <>
            <span className="muted small" data-testid="log-matches" aria-live="polite">{matches.length ? `${Math.min(current, matches.length - 1) + 1} of ${matches.length}` : "no match"}</span>
            <button type="button" aria-label="Previous match" onClick={() => goTo(current - 1)} disabled={!matches.length}>↑</button>
            <button type="button" aria-label="Next match" onClick={() => goTo(current + 1)} disabled={!matches.length}>↓</button>
            <label className="choice"><input type="checkbox" checked={onlyMatches} onChange={(e) => setOnlyMatches(e.target.checked)} /> Only matching lines</label>
          </>
        )}
        <span className="muted small log-status" data-testid="log-status">{status}{status && " · "}{count.toLocaleString()} lines</span>
      </div>
      <ErrorBox error={error} />
      <div className="log-view" ref={scroller} onScroll={onScroll} tabIndex={0} role="log" aria-label="Container log">
        <div style={{ height: virtual.getTotalSize(), position: "relative", minWidth: "100%", width: "max-content" }}>
          {virtual.getVirtualItems().map((item) => {
            const index = rows ? rows[item.index] : item.index;
            return (
              <div key={item.key} className={`log-line${index === currentLine ? " current" : ""}`} data-line={index}
                style={{ position: "absolute", top: 0, left: 0, minWidth: "100%", height: item.size, transform: `translateY(${item.start}px)` }}>
                <Highlighted text={lines.current[index] ?? ""} re={re} />
              </div>
            );
          })}
        </div>
      </div>
      {!stick && follow && (
        <button type="button" className="jump-end" onClick={() => setStick(true)}>Jump to the end</button>
      )}
    </div>
  );
}
