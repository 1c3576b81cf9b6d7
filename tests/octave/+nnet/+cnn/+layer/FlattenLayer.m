classdef FlattenLayer < nnet.cnn.layer.Layer
    % Test double of flattenLayer: the S..., C dimensions of each observation flattened (column-major) into C.
    properties (Constant)
        DefaultName = 'flatten'
    end
    methods

        function Y = predictLayer(~, X, ~)
            % S..., C flattened column-major into C for each observation ('CB' output).
            b = finddim(X, 'B');
            n = 1;
            if ~isempty(b)
                n = size(X, b);
            end
            Y = dlarray(reshape(stripdims(X), [], n), 'CB');
        end

    end
end
