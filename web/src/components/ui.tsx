// Small building blocks every page uses.
import { cloneElement, isValidElement, useEffect, useId, useRef, type ReactNode } from "react";
import { errorText } from "../api/client";
import { useAction } from "../hooks";

export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <div className="error" role="alert">
      {errorText(error)}
    </div>
  );
}

const STATE_CLASS: Record<string, string> = {
  running: "ok", succeeded: "ok", ready: "ok", active: "ok", available: "ok",
  stopped: "off", exited: "off", created: "off", paused: "warn", pending: "busy",
  starting: "busy", stopping: "busy", creating: "busy", deleting: "busy", queued: "busy",
  importing: "busy", provisioning: "busy", checked_out: "warn", error: "bad", failed: "bad",
};

export function StateBadge({ state }: { state: string }) {
  return <span className={`badge ${STATE_CLASS[state] ?? "off"}`} data-state={state}>{state.replace(/_/g, " ")}</span>;
}

export function Progress({ value, label }: { value: number; label?: string }) {
  return (
    <div className="progress" role="progressbar" aria-valuenow={value} aria-valuemin={0} aria-valuemax={100} aria-label={label}>
      <div style={{ width: `${Math.max(0, Math.min(100, value))}%` }} />
    </div>
  );
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  useEffect(() => {
    document.title = `${title} · cloudlet`;
  }, [title]);
  return (
    <header className="page-header">
      <h1>{title}</h1>
      <div className="actions">{children}</div>
    </header>
  );
}

/** A native modal dialog: focus is kept inside, Escape closes it. */
export function Modal({ title, open, onClose, children, wide }: {
  title: string; open: boolean; onClose: () => void; children: ReactNode; wide?: boolean;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog ref={ref} className={wide ? "wide" : ""} onClose={onClose} aria-label={title}>
      <header>
        <h2>{title}</h2>
        <button type="button" className="icon" aria-label="Close" onClick={onClose}>×</button>
      </header>
      {open && children}
    </dialog>
  );
}

/** A button that runs an async action, shows it is busy and reports a failure. */
export function ActionButton({ onClick, children, className, confirm, disabled, title }: {
  onClick: () => Promise<unknown>; children: ReactNode; className?: string; confirm?: string;
  disabled?: boolean; title?: string;
}) {
  const { busy, error, run } = useAction();
  return (
    <>
      <button
        type="button"
        className={className}
        disabled={busy || disabled}
        title={title}
        aria-busy={busy}
        onClick={async () => {
          if (confirm && !window.confirm(confirm)) return;
          await run(onClick);
        }}
      >
        {children}
      </button>
      {error ? <ErrorBox error={error} /> : null}
    </>
  );
}

/** A labelled form control. A single control gets a real label (for/id) and its hint as its
 * description, so its accessible name is the label alone; anything else is wrapped. */
export function Field({ label, children, hint }: { label: string; children: ReactNode; hint?: string }) {
  const id = useId();
  if (isValidElement<{ id?: string; "aria-describedby"?: string }>(children)) {
    const control = cloneElement(children, {
      id: children.props.id ?? id,
      "aria-describedby": hint ? `${id}-hint` : undefined,
    });
    return (
      <div className="field">
        <label htmlFor={children.props.id ?? id}>{label}</label>
        {control}
        {hint && <small id={`${id}-hint`}>{hint}</small>}
      </div>
    );
  }
  return (
    <label className="field">
      <span>{label}</span>
      {children}
      {hint && <small>{hint}</small>}
    </label>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

export function Loading() {
  return <p className="muted" aria-live="polite">Loading…</p>;
}

/** WAI-ARIA tabs: one tab stop, arrow keys (and Home/End) move between the tabs. */
export function Tabs<T extends string>({ tabs, current, onChange }: {
  tabs: [T, string][]; current: T; onChange: (tab: T) => void;
}) {
  const list = useRef<HTMLDivElement>(null);
  const move = (e: React.KeyboardEvent) => {
    const at = tabs.findIndex(([id]) => id === current);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    const next = (to + tabs.length) % tabs.length;
    onChange(tabs[next][0]);
    list.current?.querySelectorAll<HTMLButtonElement>("[role=tab]")[next]?.focus();
  };
  return (
    <div className="tabs" role="tablist" ref={list} onKeyDown={move}>
      {tabs.map(([id, label]) => (
        <button key={id} type="button" role="tab" aria-selected={current === id} tabIndex={current === id ? 0 : -1} onClick={() => onChange(id)}>
          {label}
        </button>
      ))}
    </div>
  );
}
