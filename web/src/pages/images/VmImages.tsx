// Being written on a helper's branch; replaced before this lands.
export default function VmImages() {
  return <p className="muted">VmImages</p>;
}
