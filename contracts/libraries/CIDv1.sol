// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * @title CIDv1
 * @dev IPFS content identifiers for a single raw block, rebuilt from its sha2-256 digest.
 *
 * A CIDv1 with the `raw` codec (0x55) and a sha2-256 multihash (0x12, length 0x20) is the 36 bytes
 * `0x01 0x55 0x12 0x20 ‖ digest`. Its canonical text form is multibase base32 (prefix `b`, RFC 4648 lowercase
 * alphabet, no padding): 58 base32 characters, always starting `afkrei`, so the whole CID is 59 characters
 * starting `bafkrei`. This is the CID Kubo gives (`ipfs add --cid-version=1`) to any file under 256 KiB.
 */
library CIDv1 {
    /// @dev RFC 4648 base32 alphabet, lower case.
    bytes32 private constant _ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

    /// @dev `0x01 0x55 0x12 0x20`: CID version 1, raw codec, sha2-256, 32-byte digest.
    bytes4 internal constant RAW_SHA256_PREFIX = 0x01551220;

    /// @dev Length of {toCID}'s result (`b` + 58 base32 characters).
    uint256 internal constant CID_LENGTH = 59;

    /**
     * @dev Encodes `data` as RFC 4648 base32, lower case, without padding.
     */
    function base32(bytes memory data) internal pure returns (string memory) {
        uint256 length = data.length;
        bytes memory out = new bytes((length * 8 + 4) / 5);
        uint256 buffer = 0;
        uint256 bits = 0;
        uint256 j = 0;
        for (uint256 i = 0; i < length; ++i) {
            buffer = (buffer << 8) | uint8(data[i]);
            bits += 8;
            while (bits >= 5) {
                bits -= 5;
                out[j++] = _ALPHABET[(buffer >> bits) & 31];
            }
            buffer &= (1 << bits) - 1;
        }
        if (bits > 0) {
            out[j] = _ALPHABET[(buffer << (5 - bits)) & 31];
        }
        return string(out);
    }

    /**
     * @dev The CIDv1 (base32, multibase prefix `b`) of the raw block whose sha2-256 digest is `digest`.
     * Always 59 characters starting `bafkrei`.
     */
    function toCID(bytes32 digest) internal pure returns (string memory) {
        return string.concat("b", base32(abi.encodePacked(RAW_SHA256_PREFIX, digest)));
    }

    /**
     * @dev `ipfs://` followed by {toCID} of `digest` (66 characters).
     *
     * The 36 CID bytes are 288 bits: the first 30 bits (the constant prefix) always encode to `afkrei`; the
     * remaining 52 characters cover the prefix's last 2 bits (zero) and the 256 digest bits, plus 2 zero bits of
     * padding. This specialisation writes them straight from the digest; it equals `string.concat("ipfs://",
     * toCID(digest))`.
     */
    function toIpfsURI(bytes32 digest) internal pure returns (string memory uri) {
        uint256 x = uint256(digest);
        bytes memory out = bytes("ipfs://bafkrei----------------------------------------------------");
        // Character 6 of the base32 text: 2 zero bits of the prefix and the digest's top 3 bits.
        out[14] = _ALPHABET[x >> 253];
        // Characters 7..56: 5 digest bits each, starting at digest bit 3 (counted from the most significant).
        for (uint256 i = 7; i < 57; ++i) {
            out[8 + i] = _ALPHABET[(x >> (283 - 5 * i)) & 31];
        }
        // Character 57: the digest's last 3 bits and 2 zero bits of padding.
        out[65] = _ALPHABET[(x << 2) & 31];
        uri = string(out);
    }
}
