import { lazy, Suspense, useState } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router-dom";
import { api, q, wsUrl } from "../../api/client";
import { Metrics } from "../../components/Metrics";
import { ActionButton, Empty, ErrorBox, Loading, PageHeader, StateBadge, Tabs } from "../../components/ui";
import { ago } from "../../format";
import { useResource, useTick } from "../../hooks";
import { useSession } from "../../session";
import { LogView } from "./LogView";
import { containerActions, portText, type Container } from "./model";

const Terminal = lazy(() => import("../../components/Terminal"));

type Tab = "summary" | "logs" | "terminal" | "stats";
const TABS: [Tab, string][] = [["summary", "Summary"], ["logs", "Logs"], ["terminal", "Terminal"], ["stats", "Stats"]];

// The exec websocket's protocol: typed text and sizes travel as JSON text frames.
const encodeInput = (data: string) => JSON.stringify({ type: "input", data });
const resizeMessage = (cols: number, rows: number) => JSON.stringify({ type: "resize", rows, cols });
const SHELLS = ["/bin/sh", "/bin/bash", "/bin/ash"];

function Exec({ id, running }: { id: string; running: boolean }) {
  const [shell, setShell] = useState(SHELLS[0]);
  const [session, setSession] = useState(0);
  if (!running) return <Empty>The terminal opens while the container runs.</Empty>;
  return (
    <div>
      <div className="toolbar">
        <label className="inline-field">Shell
          <select aria-label="Shell" value={shell} onChange={(e) => setShell(e.target.value)}>
            {SHELLS.map((s) => <option key={s}>{s}</option>)}
          </select>
        </label>
        <button type="button" onClick={() => setSession(session + 1)}>Reconnect</button>
      </div>
      <Suspense fallback={<Loading />}>
        <Terminal key={`${shell}-${session}`} url={wsUrl(`/instances/${q(id)}/exec/ws`, { command: shell })} encode={encodeInput} resizeMessage={resizeMessage} label={`Terminal (${shell})`} />
      </Suspense>
    </div>
  );
}

function Summary({ c }: { c: Container }) {
  const now = useTick(10000);
  const spec = c.container;
  const env = Object.entries(spec?.env ?? {});
  return (
    <div className="detail-grid">
      <section className="panel">
        <dl className="props">
          <dt>Image</dt><dd className="mono">{spec?.image ?? c.image ?? "–"}</dd>
          <dt>Engine status</dt><dd>{spec?.status ?? "–"}{spec?.exit_code != null && ` (exit code ${spec.exit_code})`}</dd>
          <dt>Started</dt><dd>{spec?.started_at ? `${new Date(spec.started_at).toLocaleString()} (${ago(spec.started_at, now)})` : "–"}</dd>
          <dt>Command</dt><dd className="mono">{spec?.command?.join(" ") || "image default"}</dd>
          {spec?.entrypoint && (<><dt>Entrypoint</dt><dd className="mono">{spec.entrypoint.join(" ")}</dd></>)}
          <dt>Restart</dt><dd>{spec?.restart ?? "no"}</dd>
          <dt>Limits</dt><dd>{spec?.cpus ? `${spec.cpus} CPU` : "no CPU limit"} · {spec?.memory ? `${spec.memory} MiB` : "no memory limit"}</dd>
          {spec?.workdir && (<><dt>Workdir</dt><dd className="mono">{spec.workdir}</dd></>)}
          {spec?.user && (<><dt>User</dt><dd className="mono">{spec.user}</dd></>)}
          <dt>Address</dt><dd className="mono" data-testid="container-ip">{c.ip ?? "–"}</dd>
          <dt>Network</dt><dd>{c.network ?? "–"}</dd>
          <dt>Hostname</dt><dd>{c.hostname}</dd>
          <dt>Created</dt><dd>{new Date(c.created_at).toLocaleString()}</dd>
          <dt>ID</dt><dd className="mono small">{c.id}{spec?.short_id && ` · engine ${spec.short_id}`}</dd>
        </dl>
      </section>
      <div>
        <section className="panel">
          <h2>Ports</h2>
          {spec?.ports.length ? (
            <ul className="plain">{spec.ports.map((p) => <li key={`${p.host}-${p.protocol}`} className="mono">{portText(p)}</li>)}</ul>
          ) : <p className="muted">No published ports.</p>}
        </section>
        <section className="panel">
          <h2>Environment</h2>
          {env.length ? (
            <ul className="plain">{env.map(([k, v]) => (
              <li key={k} className="mono small">
                <strong>{k}</strong>={v ?? <span className="muted" title="Values are shown to those who may edit this container">hidden</span>}
              </li>
            ))}</ul>
          ) : <p className="muted">No variables set.</p>}
        </section>
        {!!spec?.volumes.length && (
          <section className="panel">
            <h2>Volumes</h2>
            <ul className="plain">{spec.volumes.map((v) => <li key={v.path} className="mono small">{v.name ?? v.host_path} → {v.path}{v.read_only && " (ro)"}</li>)}</ul>
          </section>
        )}
      </div>
    </div>
  );
}

export default function ContainerDetail() {
  const { ref = "" } = useParams();
  const navigate = useNavigate();
  const { can } = useSession();
  const [params, setParams] = useSearchParams();
  const tab = (TABS.find(([t]) => t === params.get("tab"))?.[0] ?? "summary") as Tab;
  const res = useResource<Container>(`/instances/${q(ref)}`, ["instance."]);
  const c = res.data;

  if (res.error && !c) return (<><PageHeader title={ref} /><ErrorBox error={res.error} /><Link to="/containers">All containers</Link></>);
  if (!c) return <Loading />;
  if (c.kind !== "container") return (<><PageHeader title={c.name} /><p>{c.name} is a VM: <Link to={`/vms/${q(c.name)}`}>open it on the VM page</Link>.</p></>);
  const running = c.state === "running";
  const act = (action: string) => api.post(`/instances/${q(c.id)}/actions/${action}`).then(() => res.reload());

  return (
    <>
      <p className="crumbs"><Link to="/containers">Containers</Link> /</p>
      <PageHeader title={c.name}>
        <StateBadge state={c.state} />
        {can("instance:edit") && containerActions(c).map(([action, label]) => (
          <ActionButton key={action} onClick={() => act(action)} confirm={action === "kill" ? `Kill ${c.name}? It gets no chance to clean up.` : undefined}>{label}</ActionButton>
        ))}
        {can("instance:delete") && (
          <ActionButton className="danger" confirm={`Delete ${c.name}${running ? " (it runs; it is stopped first)" : ""}? Its named volumes go with it.`} onClick={async () => {
            await api.del(`/instances/${q(c.id)}?force=true`);
            navigate("/containers");
          }}>Delete</ActionButton>
        )}
      </PageHeader>
      {c.error && <div className="error">{c.error}</div>}
      <Tabs<Tab> current={tab} onChange={(t) => setParams(t === "summary" ? {} : { tab: t }, { replace: true })} tabs={TABS} />
      {tab === "summary" && <Summary c={c} />}
      {tab === "logs" && <LogView instance={c.id} running={running} />}
      {tab === "terminal" && (can("instance:edit") ? <Exec id={c.id} running={running} /> : <Empty>Opening a terminal needs the instance:edit permission.</Empty>)}
      {tab === "stats" && <Metrics instance={c.id} running={running} />}
    </>
  );
}
