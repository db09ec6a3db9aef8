import { useEffect, useState } from "react";
import { NavLink, Outlet, useNavigate } from "react-router-dom";
import { useLive } from "../live";
import { useSession } from "../session";

const NAV: [string, string, string?][] = [
  ["/", "Overview"],
  ["/vms", "Virtual machines"],
  ["/containers", "Containers"],
  ["/images", "Images"],
  ["/projects", "Dockerfiles"],
  ["/networks", "Networks"],
  ["/pools", "Pools"],
  ["/admin", "Admin", "member:view"],
];

type Theme = "light" | "dark";

function initialTheme(): Theme {
  const saved = localStorage.getItem("cloudlet.theme");
  if (saved === "light" || saved === "dark") return saved;
  return window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

export function Layout() {
  const { me, signOut, switchWorkspace, can } = useSession();
  const { connected, toasts, dismiss } = useLive();
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const [menuOpen, setMenuOpen] = useState(false);
  const navigate = useNavigate();

  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("cloudlet.theme", theme);
  }, [theme]);

  if (!me) return null;
  return (
    <div className={`shell ${menuOpen ? "menu-open" : ""}`}>
      <a className="skip" href="#main">Skip to content</a>
      <header className="topbar">
        <button type="button" className="icon menu-toggle" aria-label="Menu" aria-expanded={menuOpen} onClick={() => setMenuOpen(!menuOpen)}>☰</button>
        <span className="brand">cloudlet</span>
        <label className="workspace-switch">
          <span className="sr-only">Workspace</span>
          <select
            aria-label="Workspace"
            value={me.workspace_id}
            onChange={async (e) => {
              await switchWorkspace(e.target.value);
              navigate("/");
            }}
          >
            {me.workspaces.map((w) => (
              <option key={w.workspace_id} value={w.workspace_id}>{w.workspace} ({w.role})</option>
            ))}
          </select>
        </label>
        <span className={`live-dot ${connected ? "on" : ""}`} title={connected ? "Live updates on" : "Reconnecting…"} aria-label={connected ? "live" : "offline"} />
        <button type="button" className="icon" aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`} onClick={() => setTheme(theme === "dark" ? "light" : "dark")}>
          {theme === "dark" ? "☀" : "☾"}
        </button>
        <span className="user">{me.display_name || me.username}</span>
        <button type="button" onClick={() => void signOut()}>Sign out</button>
      </header>
      <nav className="sidebar" aria-label="Main" onClick={() => setMenuOpen(false)}>
        {NAV.filter(([, , perm]) => !perm || can(perm)).map(([to, label]) => (
          <NavLink key={to} to={to} end={to === "/"}>{label}</NavLink>
        ))}
      </nav>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
      <div className="toasts" aria-live="polite">
        {toasts.map((t) => (
          <div key={t.id} className={`toast ${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>
            <span>{t.text}</span>
            <button type="button" className="icon" aria-label="Dismiss" onClick={() => dismiss(t.id)}>×</button>
          </div>
        ))}
      </div>
    </div>
  );
}
