// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ILivingCollection} from "../interfaces/ILivingCollection.sol";

/**
 * @title RejectingRequester
 * @dev Test helper: an approved operator contract that opens evolution requests and has no `receive` function, so
 * it rejects every ETH transfer (a refund pushed to it would revert). It collects refunds with
 * {ILivingCollection-withdrawRefund} to another address.
 */
contract RejectingRequester {
    function request(ILivingCollection collection, uint256 tokenId) external payable returns (uint256) {
        return collection.requestEvolution{value: msg.value}(tokenId);
    }

    function withdrawRefund(ILivingCollection collection, address to) external {
        collection.withdrawRefund(to);
    }
}
