"""What a node and its clients share on the wire, beyond the codec's frames: the handshake, the
shared-secret exchange, TLS contexts, member addresses, and request encodings.

Both the node's runtime (raftlog/runtime/) and the client (raftlog/client.py) stand on this
package; neither imports the other.
"""
