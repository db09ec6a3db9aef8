import { useSearchParams } from "react-router-dom";
import { Empty, PageHeader, Tabs } from "../../components/ui";
import { useSession } from "../../session";
import { Audit } from "./Audit";
import { Members } from "./Members";
import { Quota } from "./Quota";
import { Tokens } from "./Tokens";
import { Users } from "./Users";
import { Workspaces } from "./Workspaces";

type Tab = "users" | "members" | "tokens" | "quota" | "audit" | "workspaces";

/** Administration: one tab each, the chosen one in ?tab= so it can be linked. */
export default function AdminPage() {
  const { me, can } = useSession();
  const [params, setParams] = useSearchParams();
  const tabs: [Tab, string][] = [
    ...(me?.is_admin ? ([["users", "Users"]] as [Tab, string][]) : []),
    ["members", "Members & roles"],
    ["tokens", "API tokens"],
    ["quota", "Quota"],
    ...(can("audit:view") ? ([["audit", "Audit log"]] as [Tab, string][]) : []),
    ["workspaces", "Workspaces"],
  ];
  const wanted = params.get("tab") as Tab | null;
  const tab: Tab = tabs.some(([t]) => t === wanted) ? (wanted as Tab) : tabs[0][0];
  if (!can("member:view")) return (<><PageHeader title="Admin" /><Empty>You need the member:view permission here.</Empty></>);
  return (
    <>
      <PageHeader title="Admin" />
      <Tabs<Tab> tabs={tabs} current={tab} onChange={(t) => setParams({ tab: t })} />
      <div role="tabpanel" aria-label={tabs.find(([t]) => t === tab)?.[1]}>
        {tab === "users" && <Users />}
        {tab === "members" && <Members />}
        {tab === "tokens" && <Tokens />}
        {tab === "quota" && <Quota />}
        {tab === "audit" && <Audit />}
        {tab === "workspaces" && <Workspaces />}
      </div>
    </>
  );
}
