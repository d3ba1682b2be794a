"""Verify a token from public sources only: the chain it lives on and IPFS content checked block by block.

``chrysalis verify`` (:mod:`agent.verify.cli`) and the studio's Verify button both call
:func:`agent.verify.core.verify_token`:

* :class:`~agent.verify.chain.ChainTarget` says where the collection is (node, address, expected chain id);
  :class:`~agent.verify.chain.CollectionReader` reads it, checking chain and contract first;
* an :class:`~agent.ipfs.fetch.Fetcher` brings the metadata, the parent chain and the images by CID from gateways,
  a Kubo API or a local repo, each block checked against its CID;
* :class:`~agent.verify.report.StageCheck` is the report: every :class:`~agent.verify.report.Check` with its
  result, the fields that differ, the verdict and the exit code (0 match, 1 mismatch, 2 cannot reproduce here;
  errors exit 3);
* :func:`agent.verify.models.load_model_from_cid` is where a model published on IPFS plugs into the replay.

The package imports nothing here, so that ``chrysalis --help`` stays fast (the replay imports torch).
"""
