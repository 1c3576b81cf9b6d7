classdef GlobalMaxPooling2DLayer < nnet.cnn.layer.Layer
    % Test double of globalMaxPooling2dLayer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.globalmaxpooling2dlayer.html):
    % the maximum over the spatial dimensions: 'SSCB' [h w c] -> 'SSCB' [1 1 c]. Export only.
    properties (Constant)
        DefaultName = 'gmpool'
    end
    methods

        function [sz, fmt] = outputSize(~, inSizes, inFmts)
            if ~strcmp(inFmts{1}, 'SSCB')
                error('hessiancoreTest:format', 'globalMaxPooling2dLayer takes ''SSCB'' input, got ''%s''', ...
                      inFmts{1});
            end
            sz = [1, 1, inSizes{1}(end)];
            fmt = 'SSCB';
        end

    end
end
