function shape = hcTestChannelShape(inSize, inFmt)
    % Size of a per-channel parameter (batch or layer normalization) for an input of size INSIZE and format
    % INFMT (test doubles): C-by-1 for 'CB' and 'CBT' data, 1x1xC for 2-D images, 1x1x1xC for 3-D
    % (batchNormalizationLayer and layerNormalizationLayer pages: Offset, Scale, TrainedMean).
    c = inSize(end);
    nS = sum(inFmt == 'S');
    if nS == 0
        shape = [c, 1];
    else
        shape = [ones(1, nS), c];
    end
end
