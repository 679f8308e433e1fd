"""Overlay networks, the data plane of one node: VXLAN networks in per-network namespaces,
static peer programming, service DNS, VIP load balancing, the ingress routing mesh and ESP
encryption. The worker agent drives it with the values the managers send (see overlay.node)."""
from overlay.model import (EncryptionKey, Endpoint, NetworkSpec, PublishedPort, ServiceDNS, ServiceVIP,
                           mac_for_ip)
from overlay.node import NodeNetworks, purge
from overlay.sh import OverlayError

__all__ = ["EncryptionKey", "Endpoint", "NetworkSpec", "NodeNetworks", "OverlayError", "PublishedPort",
           "ServiceDNS", "ServiceVIP", "mac_for_ip", "purge"]
