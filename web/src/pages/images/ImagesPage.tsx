import { lazy, Suspense } from "react";
import { useSearchParams } from "react-router-dom";
import { Loading, PageHeader, Tabs } from "../../components/ui";

const VmImages = lazy(() => import("./VmImages"));
const ContainerImages = lazy(() => import("./ContainerImages"));

type Tab = "vm" | "container";

/** VM images and container images, one tab each (?kind=container opens the second). */
export default function ImagesPage() {
  const [params, setParams] = useSearchParams();
  const tab: Tab = params.get("kind") === "container" ? "container" : "vm";
  return (
    <>
      <PageHeader title="Images" />
      <Tabs<Tab> current={tab} onChange={(t) => setParams(t === "vm" ? {} : { kind: t })} tabs={[["vm", "VM images"], ["container", "Container images"]]} />
      <Suspense fallback={<Loading />}>{tab === "vm" ? <VmImages /> : <ContainerImages />}</Suspense>
    </>
  );
}
