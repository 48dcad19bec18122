import type { Spec } from "./schema.js";

/** Outputs made for a public cloud's image import, in build order. */
export const CLOUD_OUTPUTS = ["gce", "azure", "aws"] as const;
export type CloudOutput = (typeof CLOUD_OUTPUTS)[number];

export interface Cloud {
  title: string;
  /** The file the output is, after the spec's name. */
  suffix: string;
  /** cloud-init's name for the cloud's metadata source. */
  datasource: string;
  /** What the tiny initrd loads to find the root disk on that cloud's virtual hardware. */
  boot: string[];
  /** Drivers the image must carry for the cloud's disks and network (the build checks them). */
  drivers: string[];
}

/**
 * What each cloud's import takes and its machines need: Compute Engine a
 * `disk.raw` (whole GiB) in a gzipped oldgnu tar, virtio-scsi or NVMe disks
 * and gVNIC or virtio-net; Azure a fixed VHD of a whole number of MiB on
 * Hyper-V's VMBus (storvsc, netvsc); EC2 a stream-optimized VMDK, NVMe and
 * ENA on Nitro, Xen's front ends on older types.
 */
export const CLOUDS: Record<CloudOutput, Cloud> = {
  gce: {
    title: "Compute Engine image (disk.raw in a tar.gz)",
    suffix: ".gce.tar.gz",
    datasource: "GCE",
    boot: ["virtio_scsi", "nvme"],
    drivers: ["virtio_scsi", "nvme", "virtio_net", "gve"],
  },
  azure: {
    title: "Azure image (fixed VHD)",
    suffix: ".azure.vhd",
    datasource: "Azure",
    boot: ["hv_vmbus", "hv_storvsc"],
    drivers: ["hv_vmbus", "hv_storvsc", "hv_netvsc", "hv_utils"],
  },
  aws: {
    title: "EC2 image (stream-optimized VMDK)",
    suffix: ".aws.vmdk",
    datasource: "Ec2",
    boot: ["nvme", "xen_blkfront"],
    drivers: ["nvme", "ena", "xen_blkfront", "xen_netfront"],
  },
};

/** The clouds a spec's outputs are for. */
export function cloudsOf(spec: Pick<Spec, "outputs">): CloudOutput[] {
  return CLOUD_OUTPUTS.filter((c) => (spec.outputs as string[]).includes(c));
}
