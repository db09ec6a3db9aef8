import { useState } from "react";
import { Link } from "react-router-dom";
import { api, q } from "../../api/client";
import type { Instance, Page } from "../../api/types";
import { ActionButton, Empty, ErrorBox, Loading, PageHeader, StateBadge } from "../../components/ui";
import { useResource } from "../../hooks";
import { useSession } from "../../session";
import { vmActions } from "./actions";

export default function VmList() {
  const { can } = useSession();
  const [filter, setFilter] = useState("");
  const list = useResource<Page<Instance>>("/instances?kind=vm&limit=1000", ["instance."]);
  const vms = (list.data?.items ?? []).filter(
    (vm) => !filter || vm.name.includes(filter) || (vm.ip ?? "").includes(filter) || vm.state === filter,
  );
  return (
    <>
      <PageHeader title="Virtual machines">
        {can("instance:create") && <Link className="button primary" to="/vms/new">New VM</Link>}
      </PageHeader>
      <div className="toolbar">
        <input type="search" placeholder="Filter by name, address or state" aria-label="Filter VMs" value={filter} onChange={(e) => setFilter(e.target.value)} />
        <span className="muted">{vms.length} of {list.data?.items.length ?? 0}</span>
      </div>
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? (
        <Loading />
      ) : vms.length === 0 ? (
        <Empty>No VMs yet. <Link to="/vms/new">Create one</Link>.</Empty>
      ) : (
        <div className="table-wrap">
          <table aria-label="Virtual machines">
            <thead>
              <tr><th>Name</th><th>State</th><th>Address</th><th className="hide-narrow">Image</th><th className="hide-narrow">Size</th><th>Actions</th></tr>
            </thead>
            <tbody>
              {vms.map((vm) => (
                <tr key={vm.id} data-vm={vm.name}>
                  <td><Link to={`/vms/${q(vm.name)}`}>{vm.name}</Link></td>
                  <td><StateBadge state={vm.state} /></td>
                  <td className="mono">{vm.ip ?? "–"}</td>
                  <td className="hide-narrow">{vm.image ?? "–"}</td>
                  <td className="hide-narrow">{vm.cpus} vCPU · {vm.memory} MiB · {vm.disk} GB</td>
                  <td>
                    <div className="row-actions">
                      {can("instance:edit") && vmActions(vm).slice(0, 2).map(([action, label]) => (
                        <ActionButton key={action} onClick={() => api.post(`/instances/${q(vm.id)}/actions/${action}`)}>{label}</ActionButton>
                      ))}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
