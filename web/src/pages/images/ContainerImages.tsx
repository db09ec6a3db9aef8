// Being written on a helper's branch; replaced before this lands.
export default function ContainerImages() {
  return <p className="muted">ContainerImages</p>;
}
