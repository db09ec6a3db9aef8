import { lazy, Suspense } from "react";
import { BrowserRouter, Navigate, Route, Routes, useLocation } from "react-router-dom";
import { Layout } from "./components/Layout";
import { Loading } from "./components/ui";
import { LiveProvider } from "./live";
import { Login, OIDC_LANDING, OidcLanding } from "./pages/Login";
import { NotFound } from "./pages/NotFound";
import { Overview } from "./pages/Overview";
import { SessionProvider, useSession } from "./session";

// Pages past the overview load on first visit; the consoles and the editor are split further
// inside them, so the first load stays small.
const Vms = lazy(() => import("./pages/vms/VmList"));
const VmCreate = lazy(() => import("./pages/vms/VmCreate"));
const VmDetail = lazy(() => import("./pages/vms/VmDetail"));
const Images = lazy(() => import("./pages/images/ImagesPage"));
const Networks = lazy(() => import("./pages/networks/NetworkList"));
const Pools = lazy(() => import("./pages/pools/PoolList"));
const PoolDetail = lazy(() => import("./pages/pools/PoolDetail"));
const Admin = lazy(() => import("./pages/admin/AdminPage"));
const Containers = lazy(() => import("./pages/containers/ContainerList"));
const ContainerDetail = lazy(() => import("./pages/containers/ContainerDetail"));
const Projects = lazy(() => import("./pages/projects/ProjectList"));
const ProjectDetail = lazy(() => import("./pages/projects/ProjectDetail"));

function Routed() {
  const { me, loading } = useSession();
  const location = useLocation();
  if (loading) return <Loading />;
  if (!me) {
    return (
      <Routes>
        <Route path="/login" element={<Login />} />
        <Route path={OIDC_LANDING} element={<OidcLanding />} />
        <Route path="*" element={<Navigate to="/login" replace state={{ from: location.pathname }} />} />
      </Routes>
    );
  }
  return (
    <LiveProvider workspace={me.workspace_id}>
      <Suspense fallback={<Loading />}>
        <Routes>
          <Route path={OIDC_LANDING} element={<Navigate to="/" replace />} />
          <Route path="/login" element={<Navigate to={(location.state as { from?: string })?.from ?? "/"} replace />} />
          <Route element={<Layout />}>
            <Route index element={<Overview />} />
            <Route path="vms" element={<Vms />} />
            <Route path="vms/new" element={<VmCreate />} />
            <Route path="vms/:ref" element={<VmDetail />} />
            <Route path="images" element={<Images />} />
            <Route path="networks" element={<Networks />} />
            <Route path="pools" element={<Pools />} />
            <Route path="pools/:ref" element={<PoolDetail />} />
            <Route path="admin" element={<Admin />} />
            <Route path="containers" element={<Containers />} />
            <Route path="containers/:ref" element={<ContainerDetail />} />
            <Route path="projects" element={<Projects />} />
            <Route path="projects/:name" element={<ProjectDetail />} />
            <Route path="*" element={<NotFound />} />
          </Route>
        </Routes>
      </Suspense>
    </LiveProvider>
  );
}

export function App() {
  return (
    <BrowserRouter>
      <SessionProvider>
        <Routed />
      </SessionProvider>
    </BrowserRouter>
  );
}
