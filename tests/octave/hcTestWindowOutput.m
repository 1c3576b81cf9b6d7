function sz = hcTestWindowOutput(inSize, window, stride, dilation, mode, padding)
    % Output size [h w c] of a 2-D convolution or pooling window over an [h w c] input (test doubles):
    % 'same' gives ceil(input / stride); 'manual' floor((input + pads - span) / stride) + 1 with
    % span = dilation .* (window - 1) + 1 (convolution2dLayer page, "Padding" and "Stride").
    if strcmp(mode, 'same')
        hw = ceil(inSize(1:2) ./ stride);
    else
        span = dilation .* (window - 1) + 1;
        hw = floor((inSize(1:2) + [padding(1) + padding(2), padding(3) + padding(4)] - span) ./ stride) + 1;
    end
    if any(hw < 1)
        error('hessiancoreTest:size', 'the window [%s] does not fit the input [%s]', num2str(window), ...
              num2str(inSize));
    end
    sz = [hw, inSize(3)];
end
