classdef Layer
    % Octave test double of nnet.cnn.layer.Layer, the superclass of every layer
    % (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.layer.html). MATLAB concatenates
    % layers of different classes into a heterogeneous Layer array; Octave cannot, so [l1 l2 ...] returns
    % a nnet.cnn.layer.LayerArray that indexes the same way (layers(i), numel(layers)).
    %
    % What the dlnetwork double asks of a layer (not MATLAB API; the double's own protocol):
    %   learnableNames / stateNames   the Learnables and State rows the layer owns, in table order
    %   parameterShapes(inSizes, inFmts)  the size of each of those rows for the given input sizes
    %   initialValue(name, shape, inSizes)  a value for an empty parameter at initialization
    %   outputSize(inSizes, inFmts)   the output size ([C], [H W C], ...) and format ('CB', 'SSCB', 'CBT')
    % Sizes leave out B and T. Every layer has one input and one output unless it says otherwise.
    properties
        Name = ''
    end
    properties (SetAccess = protected)
        NumInputs = 1
        InputNames = {'in'}
        NumOutputs = 1
        OutputNames = {'out'}
    end
    methods

        function layer = set.Name(layer, value)
            if ~(ischar(value) && (isempty(value) || isrow(value))) && ~(isstring(value) && isscalar(value))
                error('hessiancoreTest:invalidProperty', 'Name must be a character vector or string scalar');
            end
            layer.Name = char(value);
        end

        function out = horzcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function out = vertcat(varargin)
            out = nnet.cnn.layer.LayerArray.concat(varargin);
        end

        function layer = setInputs(layer, numInputs, inputNames)
            % For the multi-input layer doubles (NumInputs and InputNames are read-only in MATLAB).
            layer.NumInputs = numInputs;
            layer.InputNames = inputNames;
        end

        function names = learnableNames(~)
            names = {};
        end

        function names = stateNames(~)
            names = {};
        end

        function shapes = parameterShapes(~, ~, ~)
            shapes = {};
        end

        function value = initialValue(~, name, shape, ~)
            % Defaults shared by the layers: zeros (biases, offsets, means, states), ones (scales,
            % variances); weights are Glorot-uniform in the layers that have them. Single, as MATLAB.
            if any(strcmp(name, {'Scale', 'TrainedVariance'}))
                value = ones(shape, 'single');
            else
                value = zeros(shape, 'single');
            end
        end

        function [sz, fmt] = outputSize(~, inSizes, inFmts)
            % Elementwise layers keep the size and the format of their input.
            sz = inSizes{1};
            fmt = inFmts{1};
        end

        function Y = predictLayer(layer, X, ~)
            error('hessiancoreTest:notImplemented', 'the test double of %s has no predict', class(layer));
        end

    end
    methods (Static)

        function W = glorot(shape, fanIn, fanOut)
            % Glorot (Xavier) uniform in +-sqrt(6 / (fanIn + fanOut)), single precision.
            W = single((2 * rand(shape) - 1) * sqrt(6 / (fanIn + fanOut)));
        end

    end
end
