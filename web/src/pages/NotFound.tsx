import { Link } from "react-router-dom";
import { PageHeader } from "../components/ui";

export function NotFound() {
  return (
    <>
      <PageHeader title="Not found" />
      <p>Nothing lives at this address. <Link to="/">Back to the overview</Link></p>
    </>
  );
}
