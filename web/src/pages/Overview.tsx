import { useState } from "react";
import { Link } from "react-router-dom";
import type { CloudEvent, Image, Instance, Network, Operation, Page, Quota, ServerInfo } from "../api/types";
import { ErrorBox, PageHeader, Progress, StateBadge } from "../components/ui";
import { ago, opLabel } from "../format";
import { useResource, useTick } from "../hooks";
import { useEvents } from "../live";
import { useSession } from "../session";

function Card({ title, children, to }: { title: string; children: React.ReactNode; to?: string }) {
  return (
    <section className="card">
      <h2>{to ? <Link to={to}>{title}</Link> : title}</h2>
      {children}
    </section>
  );
}

function Meter({ label, used, total, unit }: { label: string; used: number; total: number; unit: string }) {
  const pct = total ? Math.round((used / total) * 100) : 0;
  return (
    <div className="meter">
      <div className="meter-label"><span>{label}</span><span>{used} / {total} {unit}</span></div>
      <Progress value={pct} label={label} />
    </div>
  );
}

export function Overview() {
  const { me } = useSession();
  const now = useTick(10000);
  const instances = useResource<Page<Instance>>("/instances?limit=1000", ["instance."]);
  const images = useResource<Image[]>("/images", ["operation."]);
  const networks = useResource<Network[]>("/networks", ["operation."]);
  const info = useResource<ServerInfo>("/info");
  const quota = useResource<Quota>(me ? `/workspaces/${me.workspace_id}/quota` : null, ["instance."]);
  const running = useResource<Page<Operation>>("/operations?status=running&limit=20", ["operation."]);
  const recent = useResource<Page<Operation>>("/operations?limit=8", ["operation."]);
  const [events, setEvents] = useState<CloudEvent[]>([]);
  useEvents(["instance.", "pool."], (e) => setEvents((all) => [e, ...all].slice(0, 12)));

  const items = instances.data?.items ?? [];
  const vms = items.filter((i) => i.kind === "vm");
  const containers = items.filter((i) => i.kind === "container");
  const host = info.data?.host as { cpus?: number; memory_total_mb?: number; memory_available_mb?: number } | null | undefined;
  const usedMemory = vms.filter((v) => v.state === "running").reduce((sum, v) => sum + v.memory, 0);

  return (
    <>
      <PageHeader title="Overview">
        <Link className="button primary" to="/vms/new">New VM</Link>
      </PageHeader>
      <ErrorBox error={instances.error || info.error} />
      <div className="cards">
        <Card title="Virtual machines" to="/vms">
          <p className="big" data-testid="vm-count">{vms.length}</p>
          <p className="muted">{vms.filter((v) => v.state === "running").length} running</p>
        </Card>
        <Card title="Containers" to="/containers">
          <p className="big">{containers.length}</p>
          <p className="muted">{containers.filter((v) => v.state === "running").length} running</p>
        </Card>
        <Card title="Images" to="/images">
          <p className="big">{images.data?.length ?? "–"}</p>
          <p className="muted">VM images</p>
        </Card>
        <Card title="Networks" to="/networks">
          <p className="big">{networks.data?.length ?? "–"}</p>
          <p className="muted">{networks.data?.reduce((s, n) => s + n.addresses_used, 0) ?? 0} addresses in use</p>
        </Card>
      </div>
      <div className="cards two">
        <Card title="Host capacity">
          {host ? (
            <>
              <Meter label="Memory of running VMs" used={usedMemory} total={host.memory_total_mb ?? 0} unit="MiB" />
              <Meter label="Host memory in use" used={(host.memory_total_mb ?? 0) - (host.memory_available_mb ?? 0)} total={host.memory_total_mb ?? 0} unit="MiB" />
              <p className="muted">{host.cpus} CPUs · {info.data?.drivers.map((d) => `${d.name} ${d.version ?? "unreachable"}${d.details.accelerator ? ` (${d.details.accelerator})` : ""}`).join(", ")}</p>
            </>
          ) : (
            <p className="muted">Host details need an admin.</p>
          )}
          {quota.data && (
            <div className="quota">
              <h3>Workspace quota</h3>
              {Object.entries(quota.data.usage).map(([k, used]) => {
                const limit = quota.data!.limits[k];
                return limit != null ? (
                  <Meter key={k} label={k.replace(/_/g, " ")} used={used} total={limit} unit="" />
                ) : (
                  <div key={k} className="meter-label"><span>{k.replace(/_/g, " ")}</span><span>{used} · no limit</span></div>
                );
              })}
            </div>
          )}
        </Card>
        <Card title="Running operations">
          {running.data?.items.length ? (
            <ul className="ops">
              {running.data.items.map((op) => (
                <li key={op.id}>
                  <span>{opLabel(op.kind)} {op.message && <span className="muted">— {op.message}</span>}</span>
                  <Progress value={op.progress} label={op.kind} />
                </li>
              ))}
            </ul>
          ) : (
            <p className="muted">Nothing running.</p>
          )}
          <h3>Recent operations</h3>
          <ul className="plain">
            {recent.data?.items.map((op) => (
              <li key={op.id}>
                <StateBadge state={op.status} /> {opLabel(op.kind)} <span className="muted">{ago(op.created_at, now)}</span>
                {op.error?.detail && <div className="muted small">{op.error.detail}</div>}
              </li>
            ))}
          </ul>
        </Card>
      </div>
      <Card title="Live events">
        {events.length ? (
          <ul className="plain" data-testid="live-events">
            {events.map((e, i) => (
              <li key={i}><code>{e.type}</code> {String(e.data.name ?? e.data.id ?? "")} {e.data.state ? <StateBadge state={String(e.data.state)} /> : null} <span className="muted">{ago(e.time, now)}</span></li>
            ))}
          </ul>
        ) : (
          <p className="muted">Changes in this workspace appear here as they happen.</p>
        )}
      </Card>
    </>
  );
}
