// Media types of the manifests the registry stores (OCI image spec and Docker's schema 2).
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
/** Docker's deprecated schema 1 (signed or not): refused, every current client pushes schema 2. */
export const DOCKER_SCHEMA1 = ['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws'];

export type ManifestKind = 'image' | 'index';

export const MANIFEST_MEDIA_TYPES: Readonly<Record<string, ManifestKind>> = {
  [OCI_MANIFEST]: 'image',
  [DOCKER_MANIFEST]: 'image',
  [OCI_INDEX]: 'index',
  [DOCKER_MANIFEST_LIST]: 'index',
};

export function manifestKind(mediaType: string): ManifestKind | undefined {
  return Object.hasOwn(MANIFEST_MEDIA_TYPES, mediaType) ? MANIFEST_MEDIA_TYPES[mediaType] : undefined;
}

/** The media type part of a Content-Type header (parameters and case dropped). */
export function baseMediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0].trim().toLowerCase();
}
