classdef GlobalAveragePooling2DLayer < nnet.cnn.layer.Layer
    % Test double of globalAveragePooling2dLayer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.globalaveragepooling2dlayer.html):
    % the mean over the spatial dimensions: 'SSCB' [h w c] -> 'SSCB' [1 1 c]. Export only.
    properties (Constant)
        DefaultName = 'gapool'
    end
    methods

        function [sz, fmt] = outputSize(~, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'SSCB')
                error('hessiancoreTest:format', 'globalAveragePooling2dLayer takes ''SSCB'' input, got ''%s''', ...
                      inFmts{1});
            end
            sz = [1, 1, inSizes{1}(end)];
            fmt = 'SSCB';
        end

    end
end
