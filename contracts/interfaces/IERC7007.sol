// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {IERC721} from "@openzeppelin/contracts/token/ERC721/IERC721.sol";

/**
 * @title IERC7007
 * @dev ERC-7007 (Final): Verifiable AI-Generated Content Token, an ERC-721 extension. Its ERC-165 id is
 * `0x702c55a6` (`addAigcData` ^ `verify`).
 *
 * The event follows the ERC's reference implementation (`assets/erc-7007/contracts/IERC7007.sol`): `aigcData` is
 * not indexed, so the log carries it. The ERC's specification text lists it as `indexed`; the event's signature,
 * and so its topic 0, is the same either way.
 */
interface IERC7007 is IERC165, IERC721 {
    /// @dev Emitted when AI-generated content (AIGC) data is added to token `tokenId`.
    event AigcData(uint256 indexed tokenId, bytes indexed prompt, bytes aigcData, bytes proof);

    /// @dev Adds AIGC data to token `tokenId`: `aigcData` generated from `prompt`, with `proof`.
    function addAigcData(uint256 tokenId, bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external;

    /// @dev Verifies `prompt`, `aigcData` and `proof`.
    function verify(bytes calldata prompt, bytes calldata aigcData, bytes calldata proof)
        external
        view
        returns (bool success);
}
