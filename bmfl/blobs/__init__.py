"""Model blobs: safetensors codec (:mod:`.codec`), Kubo-identical CIDs (:mod:`.cid`,
:mod:`.unixfs`), stores behind one interface (:mod:`.store`, :mod:`.local`, :mod:`.kubo`),
the ``/ipfs/{cid}`` gateway (:mod:`.gateway`) and its trustless client
(:mod:`.gateway_client`). Import from the submodules: the stores do not load torch."""
