// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC721URIStorage} from "@openzeppelin/contracts/token/ERC721/extensions/ERC721URIStorage.sol";

/**
 * @title URIStorageBaseline
 * @dev GAS BASELINE ONLY (bench/gas.py): OpenZeppelin's {ERC721URIStorage}, which stores each token's full URI
 * string, with open mint and URI setters. No access control: never deploy it for real.
 */
contract URIStorageBaseline is ERC721URIStorage {
    constructor() ERC721("URIStorageBaseline", "BASE") {}

    /// @dev Mints ids `firstId..firstId + count - 1` to `to`.
    function mint(address to, uint256 firstId, uint256 count) external {
        for (uint256 i = 0; i < count; ++i) {
            _mint(to, firstId + i);
        }
    }

    /// @dev Stores `uri` for `tokenId`. Emits {MetadataUpdate}.
    function setTokenURI(uint256 tokenId, string calldata uri) external {
        _setTokenURI(tokenId, uri);
    }

    /// @dev Stores `uris[i]` for `tokenIds[i]`. Emits one {MetadataUpdate} per token.
    function setTokenURIs(uint256[] calldata tokenIds, string[] calldata uris) external {
        for (uint256 i = 0; i < tokenIds.length; ++i) {
            _setTokenURI(tokenIds[i], uris[i]);
        }
    }
}
