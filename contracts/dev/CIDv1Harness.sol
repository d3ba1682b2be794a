// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CIDv1} from "../libraries/CIDv1.sol";

/**
 * @title CIDv1Harness
 * @dev TEST ONLY: exposes the internal {CIDv1} library functions so that tests can compare them with an
 * independent implementation (Python's `base64.b32encode`).
 */
contract CIDv1Harness {
    function base32(bytes calldata data) external pure returns (string memory) {
        return CIDv1.base32(data);
    }

    function toCID(bytes32 digest) external pure returns (string memory) {
        return CIDv1.toCID(digest);
    }

    function toIpfsURI(bytes32 digest) external pure returns (string memory) {
        return CIDv1.toIpfsURI(digest);
    }
}
