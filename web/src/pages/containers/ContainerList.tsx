import { useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { api, q } from "../../api/client";
import type { Page } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Loading, Modal, PageHeader, StateBadge } from "../../components/ui";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import { containerActions, portText, type Container } from "./model";
import { RunContainer } from "./RunContainer";

export default function ContainerList() {
  const { can } = useSession();
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const [filter, setFilter] = useState("");
  const list = useResource<Page<Container>>("/instances?kind=container&limit=1000", ["instance."]);
  const running = params.get("run") !== null;
  const f = filter.trim().toLowerCase();
  const all = list.data?.items ?? [];
  const shown = all.filter(
    (c) => !f || c.name.includes(f) || c.state === f || (c.ip ?? "").includes(f) || (c.container?.image ?? "").toLowerCase().includes(f),
  );
  return (
    <>
      <PageHeader title="Containers">
        {can("instance:create") && <button type="button" className="primary" onClick={() => setParams({ run: params.get("image") ?? "" })}>Run container</button>}
      </PageHeader>
      <div className="toolbar">
        <input type="search" placeholder="Filter by name, image, address or state" aria-label="Filter containers" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <span className="muted">{shown.length} of {all.length}</span>
      </div>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? (
        <Loading />
      ) : shown.length === 0 ? (
        <Empty>{all.length ? "No container matches the filter." : "No containers yet."}</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Containers">
            <thead>
              <tr><th>Name</th><th>State</th><th className="hide-narrow">Image</th><th>Address</th><th className="hide-narrow">Ports</th><th>Actions</th></tr>
            </thead>
            <tbody>
              {shown.map((c) => (
                <tr key={c.id} data-container={c.name}>
                  <td><Link to={`/containers/${q(c.name)}`}>{c.name}</Link></td>
                  <td><StateBadge state={c.state} />{c.container?.status && c.container.status !== c.state && <span className="muted small"> {c.container.status}</span>}</td>
                  <td className="hide-narrow mono small">{c.container?.image ?? c.image ?? "–"}</td>
                  <td className="mono">{c.ip ?? "–"}</td>
                  <td className="hide-narrow mono small">{c.container?.ports.map(portText).join(", ") || "–"}</td>
                  <td>
                    <div className="row-actions">
                      {can("instance:edit") && containerActions(c).slice(0, 1).map(([action, label]) => (
                        <ActionButton key={action} onClick={() => api.post(`/instances/${q(c.id)}/actions/${action}`).then(() => list.reload())}>{label}</ActionButton>
                      ))}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Modal title="Run container" open={running} onClose={() => setParams({})} wide>
        <RunContainer initialImage={params.get("run") || undefined} onCreated={(name) => navigate(`/containers/${q(name)}`)} />
      </Modal>
    </>
  );
}
